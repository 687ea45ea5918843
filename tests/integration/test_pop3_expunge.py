"""An IMAP-style expunge during a POP3 session, seen through the store's
change watcher (Store.run): the expunged message's content still exists (a
copy in another mailbox shares it), so only the change notification can tell
the POP3 session that the message is gone."""

from __future__ import annotations

import poplib
import ssl
from pathlib import Path

import trio
import trustme

from mailstack.auth.authenticator import Authenticator
from mailstack.net import Bound
from mailstack.pop3 import server
from mailstack.service import ServiceContext
from mailstack.store import migrate
from mailstack.store.store import open_store
from mailstack.tls import TlsProvider
from tests.integration.conftest import base_config, create_accounts, write_certificate

MESSAGE = b"Subject: shared\r\n\r\nbody\r\n"


async def test_expunge_seen_through_watcher(ca: trustme.CA, tmp_path: Path) -> None:
    with trio.fail_after(60):
        config = base_config(tmp_path, ["pop3"])
        write_certificate(ca, config.tls, "localhost", "127.0.0.1")
        ca_path = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        config.data_path.mkdir(parents=True)
        await trio.to_thread.run_sync(migrate.upgrade, config.database_url)
        async with open_store(config) as store, trio.open_nursery() as nursery:
            await create_accounts(store, config)
            account = await store.get_account("alice@example.test")
            assert account is not None
            (first,) = await store.deliver([account.id], MESSAGE)
            await store.deliver([account.id], MESSAGE.replace(b"shared", b"other"))
            archive = await store.get_mailbox(account.id, "Archive")
            assert archive is not None
            await store.copy_messages(first.mailbox_id, [first.uid], archive.id)
            ctx = ServiceContext(config, store, Authenticator(config, store), TlsProvider(config))
            bound: list[Bound] = await nursery.start(server.serve, ctx)
            port = next(b.port for b in bound if b.implicit_tls)

            def connect() -> poplib.POP3_SSL:
                context = ssl.create_default_context(cafile=str(ca_path))
                client = poplib.POP3_SSL("127.0.0.1", port, context=context, timeout=30)
                client.user("alice@example.test")
                client.pass_("alice-password")
                return client

            client = await trio.to_thread.run_sync(connect)
            await store.set_flags(first.mailbox_id, [first.uid], "add", ["\\Deleted"])
            await store.expunge(first.mailbox_id, [first.uid])
            await trio.sleep(0.5)  # the watcher polls every 0.15 s at most

            def rest() -> tuple[bytes, bytes, bytes]:
                try:
                    client.retr(1)
                except poplib.error_proto as exc:
                    gone = bytes(exc.args[0])
                else:
                    gone = b"retrieved"
                second = client.retr(2)[0]
                client.dele(1)
                return gone, second, client.quit()

            gone, second, bye = await trio.to_thread.run_sync(rest)
            assert gone == b"-ERR message 1 no longer exists"
            assert second == b"+OK %d octets" % len(MESSAGE.replace(b"shared", b"other"))
            assert bye == b"+OK bye"
            copies = await store.list_messages(archive.id)
            assert len(copies) == 1  # the copy elsewhere is untouched
            nursery.cancel_scope.cancel()
