r"""The command line's targets: ``--target URL`` and the options that follow it.

Options given after a ``--target`` apply to that target; given before any ``--target``, to every
target (argparse reads options in order, so each option's action writes into the last target
seen). :func:`targets_from` resolves them into :class:`TargetSpec`\ s.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ENGINE", "MODES", "TargetSpec", "add_target_options", "targets_from"]

ENGINE = "engine"
"""The target that is this engine's own default server (``engine:PIPELINE`` for another)."""
MODES = ("auto", "echo", "agent")


@dataclass(frozen=True)
class TargetSpec:
    """One ``--target`` and its options."""

    url: str
    label: str
    auth_token: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    pids: tuple[int, ...] = ()
    mode: str = "auto"
    ca_file: str | None = None
    insecure_tls: bool = False

    @property
    def kind(self) -> str:
        """``engine``, ``webhook`` or ``stream``."""
        if self.is_engine:
            return "engine"
        return "stream" if self.url.startswith(("ws://", "wss://")) else "webhook"

    @property
    def is_engine(self) -> bool:
        """Whether the bench starts this engine's server for it."""
        return self.url == ENGINE or self.url.startswith(ENGINE + ":")

    def pipeline(self) -> str:
        """The pipeline of an ``engine`` target: named, or ``echo`` (``turn-echo`` as an
        agent)."""
        if self.url.startswith(ENGINE + ":"):
            return self.url.split(":", 1)[1]
        return "turn-echo" if self.mode == "agent" else "echo"

    def describe(self) -> dict[str, Any]:
        """For the report (no secrets: the auth token and parameter values are left out)."""
        return {
            "label": self.label,
            "url": self.url,
            "kind": self.kind,
            "mode_asked": self.mode,
            "signed": self.auth_token is not None,
            "parameters": sorted(self.parameters),
            "pids": list(self.pids),
        }


def _check_url(url: str) -> str:
    if url == ENGINE or url.startswith(ENGINE + ":"):
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"a target is engine[:PIPELINE], http(s)://HOST/webhook or ws(s)://HOST/stream, "
            f"not {url!r}"
        )
    return url


def _label(url: str) -> str:
    if url == ENGINE:
        return "voice-engine"
    if url.startswith(ENGINE + ":"):
        return f"voice-engine ({url.split(':', 1)[1]})"
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path}"


class _Target(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        targets = list(getattr(namespace, "targets", None) or [])
        targets.append({"url": values})
        namespace.targets = targets


class _Option(argparse.Action):
    """An option of the last ``--target`` given (before any, of every target)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        targets = getattr(namespace, "targets", None)
        if targets:
            where = targets[-1]
        else:
            where = dict(getattr(namespace, "target_defaults", None) or {})
            namespace.target_defaults = where
        key = self.dest.removeprefix("target_option_")
        if key == "param":
            assert isinstance(values, tuple)
            name, value = values
            where["param"] = {**where.get("param", {}), name: value}
        elif key == "pid":
            where["pids"] = [*where.get("pids", []), values]
        elif self.nargs == 0:
            where[key] = True
        else:
            where[key] = values


def _parameter(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value


def add_target_options(bench: argparse.ArgumentParser) -> None:
    """``--target`` and its options."""
    group = bench.add_argument_group(
        "targets (another server; options after a --target apply to it, before any to all)"
    )
    group.add_argument(
        "--target",
        action=_Target,
        type=_check_url,
        metavar="URL",
        help="benchmark this server: http(s)://HOST/PATH (its voice webhook), ws(s)://HOST/PATH "
        "(its Media Streams socket) or engine[:PIPELINE] (this engine's default server); "
        "repeat to compare side by side",
    )
    add = group.add_argument
    add(
        "--auth-token",
        action=_Option,
        dest="target_option_auth_token",
        metavar="TOKEN",
        help="sign the webhook and the stream handshake with this Auth Token, as Twilio does",
    )
    add(
        "--param",
        action=_Option,
        dest="target_option_param",
        type=_parameter,
        metavar="NAME=VALUE",
        help="a customParameters entry of start (stream URLs; repeatable)",
    )
    add(
        "--target-pid",
        action=_Option,
        dest="target_option_pid",
        type=int,
        metavar="PID",
        help="the target's process (with its children): its CPU and memory are reported "
        "(repeatable)",
    )
    add(
        "--mode",
        action=_Option,
        dest="target_option_mode",
        choices=MODES,
        help="what the target is: echo (round trip, capacity) or agent (turns, barge-in); "
        "default auto (one short call decides)",
    )
    add(
        "--label",
        action=_Option,
        dest="target_option_label",
        metavar="NAME",
        help="the target's name in the reports",
    )
    add(
        "--ca-file",
        action=_Option,
        dest="target_option_ca_file",
        metavar="PEM",
        help="also trust this CA for https:// and wss:// targets",
    )
    add(
        "--insecure-tls",
        action=_Option,
        nargs=0,
        dest="target_option_insecure_tls",
        help="do not check the target's TLS certificate",
    )


def targets_from(args: argparse.Namespace) -> list[TargetSpec]:
    """The targets of the command line, each with its options (or the common ones)."""
    defaults: dict[str, Any] = getattr(args, "target_defaults", None) or {}
    out = []
    for given in getattr(args, "targets", None) or []:
        options = {**defaults, **given}
        options["param"] = {**defaults.get("param", {}), **given.get("param", {})}
        url = options["url"]
        out.append(
            TargetSpec(
                url=url,
                label=options.get("label") or _label(url),
                auth_token=options.get("auth_token"),
                parameters=options["param"],
                pids=tuple(options.get("pids", ())),
                mode=options.get("mode") or "auto",
                ca_file=options.get("ca_file"),
                insecure_tls=bool(options.get("insecure_tls")),
            )
        )
    return out
