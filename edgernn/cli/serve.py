"""`edgernn serve DIR`: a real Triton Inference Server on a repository from `export --triton`. Torch-free."""

from __future__ import annotations

import signal
import threading

import click


class _Stop(Exception):
    """SIGTERM, raised in the main thread so that the server stops as on Ctrl-C."""


def _raise_stop(signum, frame):
    raise _Stop


@click.command()
@click.argument("repo", type=click.Path(file_okay=False, exists=True))
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=8001, show_default=True, help="gRPC port (0: any free one).")
@click.option("--http-port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="HTTP port (0: any free one).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=8002, show_default=True, help="Prometheus metrics port (0: any free one).")
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 serves other machines (put it behind your load balancer).")
@click.option("--log", "log_file", type=click.Path(dir_okay=False), help="Server log file (default: tritonserver.log beside REPO).")
@click.option("--env", "env_dir", type=click.Path(file_okay=False), help="The serving Python environment (nvidia-pytriton, numpy<2, onnxruntime); made here once if missing [default: $EDGERNN_TRITON_ENV or ~/.cache/edgernn/triton-env].")
@click.option("--timeout", type=click.FloatRange(min=1), default=120, show_default=True, help="Seconds to wait for the models to load.")
def serve(repo, grpc_port, http_port, metrics_port, address, log_file, env_dir, timeout):
    """Serve a model repository with tritonserver until Ctrl-C or SIGTERM (state lives in this process)."""
    from edgernn.serve import server as server_mod

    env = server_mod.find_env(env_dir)
    if env is None:
        where = env_dir or server_mod.default_env_dir()
        click.echo(f"making the serving environment in {where} (once: {', '.join(server_mod.REQUIREMENTS)})", err=True)
    env = server_mod.ensure_env(env_dir, log=lambda line: click.echo(f"  {line}", err=True))
    srv = server_mod.Server(repo, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port,
                            address=address, log_file=log_file, env=env)
    main = threading.current_thread() is threading.main_thread()
    # SIGINT too: a server started in the background of a script inherits SIGINT ignored
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        srv.start(timeout=timeout)
        models = sorted(p.name for p in srv.repo.iterdir() if (p / "config.pbtxt").is_file())
        click.echo(f"serving {', '.join(models)} from {srv.repo} on grpc://{srv.grpc_url} (http {srv.http_url}, "
                   f"metrics http://{address}:{srv.metrics_port}/metrics); log {srv.log_file}")
        for m in models:
            click.echo(f"  stream: edgernn stream --model grpc://{srv.grpc_url}/{m} --input FRAMES.csv")
        click.echo("Ctrl-C stops it (every sequence's state is lost)", err=True)
        srv.proc.wait()
        raise server_mod.ServeError(f"tritonserver exited ({srv.proc.returncode}); its log {srv.log_file} "
                                    f"ends:\n{srv.log_tail()}")
    except (KeyboardInterrupt, _Stop):  # Ctrl-C, SIGINT, SIGTERM
        code = srv.stop()
        click.echo(f"stopped (tritonserver exit status {code})", err=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        srv.stop()
