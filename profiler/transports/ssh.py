"""Linux boards over SSH (paramiko): one SFTP push, one runner command and one cleanup per batch.

The connection is opened once per device. For each batch the runner and the batch's models go to
WORK_DIR/jcw-<session pid>-<random> over SFTP; one command runs `PYTHON runner.py --watch-stdin DIR`
there with the board's own Python and runtime, streams the runner's JSON lines back and removes DIR.
Host keys are checked against known_hosts; an unknown host is refused unless the entry says
`trust_unknown_host: true`.

Nothing is left on the board: closing the command's channel (abort, Ctrl-C, a killed `jcw`, a dropped
connection) closes the runner's stdin, so it exits at once and the command removes DIR. A DIR whose
command never ran (killed during the push) is removed at the next connect: the <session pid> in its
name is the board's sshd process of the connection that made it, and a dir whose process is gone is
stale, while a concurrent run's dir (its connection alive) is kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shlex
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko

from profiler.devices import Device
from profiler.transports import DeviceError, Interrupted
from profiler.transports.local import RUNNER, parse_records

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 1800.0
CLEANUP_TIMEOUT_S = 10.0

# Run in WORK_DIR: removes every jcw-<pid>-* dir whose sshd session process <pid> is gone (kill -0 fails
# for another user's live process too, hence /proc).
_REMOVE_STALE = (
    'for d in jcw-*-*; do p=${d#jcw-}; p=${p%%-*}; case $p in ""|*[!0-9]*) continue;; esac; '
    'kill -0 "$p" 2>/dev/null || [ -d "/proc/$p" ] || rm -rf -- "$d"; done'
)


class _UnknownHostKey(Exception):
    """The server's host key is in no known_hosts file."""


class _RefuseUnknownHost(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise _UnknownHostKey(f"{key.get_name()} {key.fingerprint}")


class _TrustUnknownHost(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        log.warning("trusting unknown host key of %s: %s %s (trust_unknown_host: true)",
                    hostname, key.get_name(), key.fingerprint)


class SSHTransport:
    """A connection to one board; `run` measures one batch per round trip."""

    def __init__(self, device: Device):
        self.device = device
        opts = device.options
        self.host, self.port, self.user = opts["host"], opts.get("port", 22), opts["user"]
        self.python = opts.get("python", "python3")
        self.command_timeout = opts.get("command_timeout", COMMAND_TIMEOUT_S)
        self.known_hosts = Path(os.path.expanduser(opts.get("known_hosts", "~/.ssh/known_hosts")))
        self._lock = threading.Lock()
        self._channel: paramiko.Channel | None = None
        self._aborted = False
        self.client = self._connect(opts)
        try:
            self.sftp = self.client.open_sftp()
            self.work_dir = self._absolute(opts["work_dir"])
            self.session_pid = self._prepare_work_dir()
        except (paramiko.SSHException, OSError, EOFError) as err:
            self.client.close()
            raise self._dropped(err) from None
        except DeviceError:
            self.client.close()
            raise

    def _fail(self, what: str) -> DeviceError:
        return DeviceError(f"device '{self.device.name}' ({self.user}@{self.host}:{self.port}): {what}")

    def _load_key(self, opts: dict) -> paramiko.PKey | None:
        """The entry's key file (decrypted with the passphrase from `passphrase_env`), or None for the agent."""
        if "key_file" not in opts:
            return None
        path = Path(os.path.expanduser(opts["key_file"]))
        passphrase = None
        if "passphrase_env" in opts:
            passphrase = os.environ.get(opts["passphrase_env"])
            if passphrase is None:
                raise self._fail(f"environment variable {opts['passphrase_env']} (passphrase_env) is not set")
        try:
            return paramiko.PKey.from_path(path, None if passphrase is None else passphrase.encode())
        except FileNotFoundError:
            raise self._fail(f"key_file {path} does not exist") from None
        except (paramiko.PasswordRequiredException, TypeError) as err:
            if passphrase is not None:
                raise self._fail(f"cannot load key_file {path}: {type(err).__name__}") from None
            raise self._fail(f"key_file {path} is encrypted: name the environment variable holding its "
                             "passphrase in passphrase_env") from None
        except (paramiko.SSHException, ValueError, OSError) as err:  # messages never hold the passphrase
            raise self._fail(f"cannot load key_file {path} (wrong passphrase or not a private key): "
                             f"{type(err).__name__}") from None

    def _connect(self, opts: dict) -> paramiko.SSHClient:
        key = self._load_key(opts)
        client = paramiko.SSHClient()
        if self.known_hosts.is_file():
            client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(
            _TrustUnknownHost() if opts.get("trust_unknown_host") else _RefuseUnknownHost())
        timeout = opts.get("connect_timeout", CONNECT_TIMEOUT_S)
        try:
            client.connect(
                self.host, port=self.port, username=self.user, pkey=key, allow_agent=key is None,
                look_for_keys=False, timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
            )
        except _UnknownHostKey as err:
            client.close()
            raise self._fail(
                f"unknown host key ({err}) not in {self.known_hosts}: check the fingerprint and add it "
                f"(ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts}), or set trust_unknown_host: true"
            ) from None
        except paramiko.BadHostKeyException:
            client.close()
            raise self._fail(f"host key does not match the one in {self.known_hosts}: the board was "
                             "reinstalled or someone is in the middle; fix known_hosts") from None
        except paramiko.AuthenticationException:
            client.close()
            how = f"key_file {opts['key_file']}" if key else "the keys of the ssh agent"
            raise self._fail(f"authentication refused with {how}: wrong key, or its public key is not "
                             f"in ~{self.user}/.ssh/authorized_keys on the board") from None
        except (OSError, paramiko.SSHException, EOFError) as err:  # refused, timed out, no route, not ssh
            client.close()
            raise self._fail(f"unreachable ({type(err).__name__}: {err}); check host, port, network and "
                             "that sshd runs on the board") from None
        return client

    def _dropped(self, err: BaseException) -> DeviceError:
        return self._fail(f"connection dropped ({type(err).__name__}: {err}); batches already finished are "
                          "stored, re-run to resume")

    def _absolute(self, path: str) -> str:
        """A remote path made absolute: '~' and relative paths are taken from the login directory."""
        if path.startswith("/"):
            return path.rstrip("/") or "/"
        home = self.sftp.normalize(".")
        rest = path[1:].lstrip("/") if path.startswith("~") else path
        return f"{home.rstrip('/')}/{rest}".rstrip("/")

    def _exec(self, command: str, what: str, timeout: float | None = None) -> str:
        """Run a short command; its output, or DeviceError with its stderr if it fails."""
        _, stdout, stderr = self.client.exec_command(command, timeout=timeout or self.command_timeout)
        out = stdout.read()
        status = stdout.channel.recv_exit_status()
        if status:
            raise self._fail(f"cannot {what} (exit {status}): {_last_line(stderr.read())}")
        return out.decode(errors="replace")

    def _prepare_work_dir(self) -> str:
        """Create work_dir, remove what killed runs left there, and return this connection's sshd pid."""
        q = shlex.quote(self.work_dir)
        out = self._exec(f"mkdir -p -- {q} && cd {q} && {{ {_REMOVE_STALE}; echo $PPID; }}", "create work_dir")
        if not out.strip().isdigit():
            raise self._fail(f"cannot tell the session's process id (`echo $PPID` printed {out.strip()[:80]!r})")
        return out.strip()

    def _push(self, batch_dir: Path, remote: str) -> None:
        self.sftp.mkdir(remote)
        self.sftp.put(str(RUNNER), f"{remote}/runner.py", confirm=False)
        for path in sorted(batch_dir.iterdir()):
            self.sftp.put(str(path), f"{remote}/{path.name}", confirm=False)

    def run(self, batch_dir: Path) -> Iterator[dict]:
        remote = f"{self.work_dir}/jcw-{self.session_pid}-{secrets.token_hex(8)}"
        q = shlex.quote(remote)
        command = (f"cd {q} && {shlex.quote(self.python)} runner.py --watch-stdin {q}; "
                   f"status=$?; cd / && rm -rf -- {q}; exit $status")
        channel, status = None, -1
        try:
            self._push(batch_dir, remote)
            channel = self._start(command)
            yield from parse_records(channel.makefile("r"), self.device.name)
            status = channel.recv_exit_status()
            problem = _last_line(channel.makefile_stderr("r").read()) if status else ""
        except TimeoutError:
            raise self._fail(f"no output from the runner for {self.command_timeout:g} s (command_timeout)") from None
        except (paramiko.SSHException, OSError, EOFError) as err:
            if not self._aborted:
                raise self._dropped(err) from None
        finally:
            if channel is not None:
                channel.close()  # the runner sees its stdin close and exits
            if status == -1:
                self._remove(remote)
        if self._aborted:
            raise Interrupted(f"device '{self.device.name}': stopped")
        if status == -1:  # the channel closed without an exit status
            raise self._dropped(ConnectionError("the server closed the session"))
        if status == 127:
            raise self._fail(f"python '{self.python}' not found on the board; set python: in devices.yaml")
        if status:
            raise self._fail(f"runner failed (exit {status}): {problem}")

    def _start(self, command: str) -> paramiko.Channel:
        """`command` running in a channel whose stdin stays open until the channel is closed."""
        channel = self.client.get_transport().open_session(timeout=self.command_timeout)
        channel.settimeout(self.command_timeout)
        channel.exec_command(command)
        with self._lock:
            self._channel = channel
            if self._aborted:
                channel.close()
        return channel

    def _remove(self, remote: str) -> None:
        """Best effort: remove the dir of a batch cut short (if this fails, the next connect removes it)."""
        with contextlib.suppress(paramiko.SSHException, OSError, EOFError, DeviceError):
            self._exec(f"rm -rf -- {shlex.quote(remote)}", "remove a batch dir", timeout=CLEANUP_TIMEOUT_S)

    def abort(self) -> None:
        """Close the running batch's channel (its runner exits); `run` then raises Interrupted."""
        with self._lock:
            self._aborted = True
            if self._channel is not None:
                self._channel.close()

    def close(self) -> None:
        self.client.close()


def _last_line(data: bytes) -> str:
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"
