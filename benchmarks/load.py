"""Load test of the app, on this machine only: ``python -m benchmarks.load [--clients 16 --requests 5 --rounds 3]``.

Starts ``app.py`` as a server on a free loopback port with its own Gradio cache folder,
then in each round ``--clients`` threads each send ``--requests`` face requests with the
same photo (what several visitors clicking the same example do). Prints per round the
failed requests, the files left in the app's and Gradio's temporary folders, and the
server's resident memory. Bounded in requests and time; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dldl_core.examples import example_photos
from dldl_core.predict import BACKENDS

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def run(clients: int, requests: int, rounds: int, backend: str = "auto", timeout_s: float = 600) -> list[dict]:
    """Rows of (round, requests, failures, temporary files, server RSS in MB); the server is stopped at the end."""
    from gradio_client import Client, handle_file

    port = _free_port()
    scratch = Path(tempfile.mkdtemp(prefix="dldl-load-"))
    env = dict(os.environ, GRADIO_TEMP_DIR=str(scratch / "gradio"), TMPDIR=str(scratch), GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--backend", backend], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + timeout_s
    try:
        url = f"http://127.0.0.1:{port}/"
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("the app did not start") from None
                time.sleep(0.5)
        photo = str(example_photos()["astronaut"])
        pool_clients = [Client(url, verbose=False) for _ in range(clients)]
        pool_clients[0].predict(handle_file(photo), api_name="/analyze_faces")  # load the models once

        def one_client(client) -> int:
            failed = 0
            for _ in range(requests):
                try:
                    annotated, _, _, _, download, _ = client.predict(handle_file(photo), api_name="/analyze_faces")
                    failed += not (Path(annotated).stat().st_size and Path(download).stat().st_size)
                except Exception:  # noqa: BLE001 - any failure of a request is what is counted
                    failed += 1
            return failed

        rows = []
        for r in range(rounds):
            if time.time() > deadline:
                raise RuntimeError(f"the load test ran past {timeout_s:.0f} s")
            t0 = time.time()
            with ThreadPoolExecutor(clients) as pool:
                failures = sum(pool.map(one_client, pool_clients))
            rows.append({"round": r + 1, "requests": clients * requests, "failures": failures, "seconds": time.time() - t0,
                         "temp_files": _files(scratch), "rss_mb": _rss_mb(server.pid)})  # fmt: skip
        return rows
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        subprocess.run(["rm", "-rf", str(scratch)], check=False)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=5, help="per client and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", choices=BACKENDS, default="auto", help="the app's --backend")
    args = ap.parse_args(argv)
    rows = run(args.clients, args.requests, args.rounds, args.backend)
    print(f"App load test: {args.clients} clients x {args.requests} face requests x {args.rounds} rounds, same photo, 127.0.0.1, "
          f"backend {args.backend}")
    print()
    print("| round | requests | failed | seconds | temporary files | server RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['round']} | {r['requests']} | {r['failures']} | {r['seconds']:.0f} | {r['temp_files']} | {r['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
