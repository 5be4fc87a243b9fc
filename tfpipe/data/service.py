"""Scale input beyond one host with the tf.data service.

Start one dispatcher and any number of workers (``tfpipe serve-data``), then
set ``input.service: grpc://HOST:PORT``: ``tfpipe.data.load`` builds the same
pipeline, and the workers run its work (read, parse, decode,
augment, batch) while the trainer only receives finished ``uint8`` batches.

Processing mode: **distributed_epoch**. The dispatcher hands out the shard
files one at a time, so across all workers every record is read exactly once
per epoch, as without the service. (``parallel_epochs`` would make every
worker read every shard with the same seeds, so an epoch would hold each
tile once per worker.) The order within an epoch depends on which worker is
faster, so runs through the service are not bit-reproducible.

Several trainers (``train.strategy: multi_worker``) read one shared job: the
dispatcher hands each batch to one of them, so together they still read
every record once per epoch (``tfpipe.train.distribute``). A named job that
has finished serves nothing to a later reader of the same name, so the
trainer draws a new name for every run.

Trainers and workers first check that the dispatcher answers
(:func:`wait_for_dispatcher`): TensorFlow itself keeps retrying an address
that does not answer, without a message (still waiting after 100 s, measured).

Example:
    $ tfpipe serve-data --dispatcher 5050                       # host A
    $ tfpipe serve-data --worker hostA:5050 --host hostB        # hosts B, C…
    $ tfpipe train experiments/kidney.yaml --set input.service=grpc://hostA:5050
"""

from __future__ import annotations

import socket
import time
from typing import Any

import tensorflow as tf

from tfpipe.errors import ConfigError

PROCESSING_MODE = "distributed_epoch"
PROTOCOL = "grpc"
CONNECT_TIMEOUT_S = 60.0
"""How long a trainer or worker waits for the dispatcher's port to accept a connection."""


def start_dispatcher(port: int = 0) -> tf.data.experimental.service.DispatchServer:
    """Start a dispatcher in this process and return it (non-blocking).

    Example:
        >>> server = start_dispatcher(0)
        >>> server.target.startswith("grpc://")
        True
    """
    config = tf.data.experimental.service.DispatcherConfig(port=port, protocol=PROTOCOL)
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(
    dispatcher_address: str, port: int = 0, host: str | None = None
) -> tf.data.experimental.service.WorkerServer:
    """Start a worker in this process that registers with a dispatcher (non-blocking).

    Args:
        dispatcher_address: ``HOST:PORT`` or ``grpc://HOST:PORT``.
        port: Port to serve on; 0 picks a free one.
        host: Name that trainers use to reach this worker; default this machine's
            host name (TensorFlow's own default, ``localhost``, only works on one machine).

    Example:
        >>> worker = start_worker(dispatcher.target, host="localhost")  # doctest: +SKIP
    """
    address = dispatcher_address.removeprefix(f"{PROTOCOL}://")
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=address,
        worker_address=f"{host or socket.gethostname()}:%port%",
        port=port,
        protocol=PROTOCOL,
    )
    return tf.data.experimental.service.WorkerServer(config)


def run_dispatcher(port: int) -> None:
    """Serve a dispatcher on ``port`` until Ctrl-C.

    Example:
        $ tfpipe serve-data --dispatcher 5050
    """
    server = start_dispatcher(port)
    print(f"tf.data dispatcher at {_public(server.target)} (Ctrl-C stops it)", flush=True)
    _serve(server, "dispatcher")


def run_worker(dispatcher_address: str, port: int = 0, host: str | None = None) -> None:
    """Serve a worker for ``dispatcher_address`` until Ctrl-C.

    Example:
        $ tfpipe serve-data --worker hostA:5050
    """
    wait_for_dispatcher(dispatcher_address, what="--worker")
    server = start_worker(dispatcher_address, port=port, host=host)
    name = host or socket.gethostname()
    # _address is the only way to learn the port picked for port=0.
    bound = server._address.rsplit(":", 1)[-1]
    print(
        f"tf.data worker at {name}:{bound} for dispatcher {dispatcher_address} (Ctrl-C stops it)",
        flush=True,
    )
    _serve(server, "worker")


def wait_for_dispatcher(
    address: str, timeout_s: float | None = None, what: str = "input.service"
) -> None:
    """Return once a TCP connection to the dispatcher at ``address`` succeeds.

    Retries (the dispatcher may still be starting) for ``timeout_s`` seconds
    (default :data:`CONNECT_TIMEOUT_S`).

    Raises:
        ConfigError: the address is not ``[grpc://]HOST:PORT``, or nothing accepts
            connections there in time.

    Example:
        >>> wait_for_dispatcher("grpc://localhost:5050", timeout_s=5)  # doctest: +SKIP
    """
    host, _, port = address.removeprefix(f"{PROTOCOL}://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{what} must be [grpc://]HOST:PORT; got {address!r}")
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2.0):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"no tf.data dispatcher answers at {address} ({what}) after {timeout_s:.0f} s "
                    f"({err.strerror or err}); start one with `tfpipe serve-data --dispatcher "
                    f"{port}` on {host}, or fix the address"
                ) from None
            time.sleep(0.5)


def distribute(ds: tf.data.Dataset, service: str, job_name: str | None = None) -> tf.data.Dataset:
    """Run ``ds`` on the tf.data service at ``service`` (see module docstring for the mode).

    Example:
        >>> ds = distribute(ds, "grpc://localhost:5050")  # doctest: +SKIP
    """
    address = service if "://" in service else f"{PROTOCOL}://{service}"
    return ds.apply(
        tf.data.experimental.service.distribute(
            processing_mode=PROCESSING_MODE, service=address, job_name=job_name
        )
    )


def _serve(server: Any, what: str) -> None:
    # server.join() blocks in C++ where Ctrl-C is not seen; sleeping in Python is
    # interruptible, and the server threads keep serving meanwhile.
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        server.stop()
        print(f"tf.data {what} stopped", flush=True)


def _public(target: str) -> str:
    host_port = target.removeprefix(f"{PROTOCOL}://")
    port = host_port.rsplit(":", 1)[-1]
    return f"{PROTOCOL}://{socket.gethostname()}:{port}"
