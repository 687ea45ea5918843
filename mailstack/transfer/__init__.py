"""Moving mail in and out: Maildir, mbox and IMAP import, Maildir and mbox export.

Readers (``maildir``, ``mbox``, ``imap_import``) are plain blocking code that
yields :class:`~mailstack.transfer.source.SourceFolder` objects; the importer
(``importer``) pulls their messages in a worker thread and stores them in
ordered batches through ``Store.append_many`` (group commit); ``export``
writes the store back out.  ``transfer.cli`` wires them into the CLI.
"""
