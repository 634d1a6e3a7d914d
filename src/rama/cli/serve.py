"""`rama serve DB`: the feature dashboard for a feature store, on 127.0.0.1 unless told otherwise.

The store is checked, and matched to its SAE (`--sae`, or the folder the store was built from), before
anything slow is loaded; the model is loaded once, only when there is an SAE (the pages that run text need
both) or a `--probe` (the /monitor page), from `--model`, the store's `model_name` or the first probe's model. The port is bound before the server starts, so a taken port is a one-line error.
"""

from __future__ import annotations

import argparse
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rama.cli.options import add_options, from_args, option
from rama.errors import ConfigError


@dataclass(frozen=True)
class ServeOptions:
    """What `rama serve` needs."""

    db: str = option("", "the feature store (from `rama features build`)", positional=True)
    model: str | None = option(None, "model for /text and /steer (default: the store's model_name)")
    sae: str | None = option(
        None,
        "the store's SAE folder: enables /text and /steer, checked against the store (default: the folder "
        "the store was built from, if it is still there)",
    )
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0 exposes the dashboard to the network)")
    port: int = option(8000, "port to listen on")
    probe: list[str] = field(
        default_factory=list,
        metadata={"help": "a probe folder (or its probe.json) for the /monitor page; repeatable"},
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` command to `rama`."""
    parser = subparsers.add_parser(
        "serve",
        help="browse a feature store in a local web dashboard",
        epilog="example: rama serve l9.db   (then open http://127.0.0.1:8000/)",
    )
    add_options(parser, ServeOptions)
    from rama.monitor import MonitorConfig

    add_options(parser, MonitorConfig, skip=("flag_prompt",))
    parser.set_defaults(handler=run_serve)


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), or a ConfigError saying why not."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, not {port}")
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this; without it uvicorn, given a socket, answers small responses
    # on a kept-alive connection 40 ms late (Nagle's algorithm against the client's delayed ACK).
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({error.strerror}); choose another --port or --host"
        ) from None
    return listener


def built_from(path: str | None) -> str | None:
    """The SAE folder a store names, if it still holds an SAE."""
    return path if path and (Path(path) / "cfg.json").is_file() else None


def run_serve(namespace: argparse.Namespace) -> int:
    import uvicorn

    from rama.features.store import FeatureStore
    from rama.hooks import load
    from rama.monitor import Monitor, MonitorConfig, Watcher, probe_watcher
    from rama.probes import load_probe
    from rama.sae.base import SAE
    from rama.web import create_app
    from rama.web.app import LOCAL_NAMES

    options = from_args(ServeOptions, namespace)
    with FeatureStore(options.db) as store:  # a bad store fails here, quickly
        model_name = options.model or store.meta.get("model_name")
        sae_dir = options.sae or built_from(store.meta.get("sae_path"))
    sae = SAE.load(sae_dir) if sae_dir else None
    if sae is not None:
        FeatureStore(options.db, sae=sae).close()  # another SAE's store is refused
    else:
        print("rama serve: no SAE folder (--sae), so /text and /steer are off", file=sys.stderr)
    if options.model and sae is None and not options.probe:
        print(
            "rama serve: --model is used only with --sae (the text and steering pages need both)",
            file=sys.stderr,
        )
    probes = [load_probe(path) for path in options.probe]  # a bad probe folder fails before the model loads
    model_name = model_name or (probes[0].meta.get("model") if probes else None)
    model = load(model_name) if (sae is not None or probes) and model_name else None
    monitor = None
    if probes and model is not None:
        names = [Path(p).resolve().parent.name if Path(p).name == "probe.json" else Path(p).resolve().name
                 for p in options.probe]  # fmt: skip
        watchers: list[Watcher] = [probe_watcher(t, f"{n}#{i}" if names.count(n) > 1 else n)
                                   for i, (t, n) in enumerate(zip(probes, names, strict=True))]  # fmt: skip
        config = MonitorConfig(window=namespace.window, aggregate=namespace.aggregate)
        monitor = Monitor(model, watchers, config)  # a probe of another model is refused here
    local = options.host in LOCAL_NAMES
    app = create_app(options.db, model=model, sae=sae, hosts=LOCAL_NAMES if local else None, monitor=monitor)
    listener = bind(options.host, options.port)
    if not local:
        print(f"rama serve: warning: listening on {options.host}, so anyone who can reach this machine can "
              "read the store and relabel its features; use --host 127.0.0.1 to keep it local", file=sys.stderr)  # fmt: skip
    port = listener.getsockname()[1]
    shown = f"[{options.host}]" if ":" in options.host else options.host
    print(f"rama serve: {options.db} at http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])
    return 0
