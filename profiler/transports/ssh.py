"""Linux boards over SSH (paramiko): one SFTP push, one runner command and one cleanup per batch.

The connection is opened once per device. For each batch the runner and the batch's models go to
WORK_DIR/jcw-<random> over SFTP; one command runs `PYTHON runner.py DIR` there with the board's own
Python and runtime, streams the runner's JSON lines back and removes DIR. Host keys are checked
against known_hosts; an unknown host is refused unless the entry says `trust_unknown_host: true`.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
from collections.abc import Iterator
from pathlib import Path

import paramiko

from profiler.devices import Device
from profiler.transports import DeviceError
from profiler.transports.local import RUNNER, parse_records

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 1800.0


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
        self.client = self._connect(opts)
        try:
            self.sftp = self.client.open_sftp()
            self.work_dir = self._absolute(opts["work_dir"])
            self._exec(f"mkdir -p -- {shlex.quote(self.work_dir)}", "create work_dir")
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

    def _exec(self, command: str, what: str) -> None:
        """Run a short command; DeviceError with its stderr if it fails."""
        _, stdout, stderr = self.client.exec_command(command, timeout=self.command_timeout)
        status = stdout.channel.recv_exit_status()
        if status:
            raise self._fail(f"cannot {what} (exit {status}): {_last_line(stderr.read())}")

    def _push(self, batch_dir: Path, remote: str) -> None:
        self.sftp.mkdir(remote)
        self.sftp.put(str(RUNNER), f"{remote}/runner.py", confirm=False)
        for path in sorted(batch_dir.iterdir()):
            self.sftp.put(str(path), f"{remote}/{path.name}", confirm=False)

    def run(self, batch_dir: Path) -> Iterator[dict]:
        remote = f"{self.work_dir}/jcw-{secrets.token_hex(8)}"
        q = shlex.quote(remote)
        command = (f"cd {q} && {shlex.quote(self.python)} runner.py {q}; "
                   f"status=$?; cd / && rm -rf -- {q}; exit $status")
        channel = None
        try:
            self._push(batch_dir, remote)
            _, stdout, stderr = self.client.exec_command(command, timeout=self.command_timeout)
            channel = stdout.channel
            yield from parse_records(stdout, self.device.name)
            status = channel.recv_exit_status()
            problem = _last_line(stderr.read()) if status else ""
        except TimeoutError:
            raise self._fail(f"no output from the runner for {self.command_timeout:g} s (command_timeout)") from None
        except (paramiko.SSHException, OSError, EOFError) as err:
            raise self._dropped(err) from None
        finally:
            if channel is not None:
                channel.close()
        if status == -1:  # the channel closed without an exit status
            raise self._dropped(ConnectionError("the server closed the session"))
        if status == 127:
            raise self._fail(f"python '{self.python}' not found on the board; set python: in devices.yaml")
        if status:
            raise self._fail(f"runner failed (exit {status}): {problem}")

    def close(self) -> None:
        self.client.close()


def _last_line(data: bytes) -> str:
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"
