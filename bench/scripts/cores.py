#!/usr/bin/env python3
"""Throughput of one relay-core process against two (docs/operations.md, "Scaling out").

Starts a mosquitto and a Redis on free ports, N `qunbridge run --role core` processes and one
`--role connectors` process (two `api` accounts, src:g -> dst:g), posts MESSAGES messages over
8 keep-alive HTTP connections and reads them back from dst's Server-Sent Events; prints the
rate for N = 1 and N = 2. Needs target/release/qunbridge, mosquitto and redis-server.

    cargo build --release -p qunbridge && python3 bench/scripts/cores.py [MESSAGES]
"""
import http.client, json, os, socket, subprocess, sys, tempfile, threading, time

BIN = os.path.join(os.path.dirname(__file__), "..", "..", "target", "release", "qunbridge")
MESSAGES = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
CONNECTIONS = 8


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def run(cores):
    tmp = tempfile.mkdtemp()
    mport, rport, src, dst = free_port(), free_port(), free_port(), free_port()
    with open(f"{tmp}/m.conf", "w") as f:
        f.write(f"listener {mport} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
                "max_queued_messages 0\nmax_inflight_messages 10000\npersistence false\n")
    procs = [subprocess.Popen(["mosquitto", "-c", f"{tmp}/m.conf"], stderr=subprocess.DEVNULL),
             subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)]
    wait_port(mport), wait_port(rport)
    config = (f'[broker]\nurl = "mqtt://127.0.0.1:{mport}"\n[store]\nredis = "redis://127.0.0.1:{rport}/"\n'
              f'[accounts.src]\nplatform = "api"\nlisten = "127.0.0.1:{src}"\n'
              f'[accounts.dst]\nplatform = "api"\nlisten = "127.0.0.1:{dst}"\n'
              '[[links]]\ngroups = ["src:g", "dst:g"]\n')
    roles = [("core", f"core-{i}") for i in range(cores)] + [("connectors", "conn")]
    for role, name in roles:
        admin = free_port()
        path = f"{tmp}/{name}.toml"
        with open(path, "w") as f:
            f.write(f'state_dir = "{tmp}/{name}"\n{config}[admin]\nlisten = "127.0.0.1:{admin}"\n')
        procs.append(subprocess.Popen([BIN, "run", "-c", path, "--role", role, "--instance", name],
                                      env={**os.environ, "QUNBRIDGE_LOG": "warn"}))
        wait_port(admin)
    wait_port(dst), wait_port(src)
    time.sleep(1)
    got = [0]
    done = threading.Event()

    def consume():
        c = http.client.HTTPConnection("127.0.0.1", dst)
        c.request("GET", "/api/v1/groups/g/events", headers={"accept": "text/event-stream"})
        r = c.getresponse()
        while got[0] < MESSAGES:
            line = r.fp.readline()
            if line.startswith(b"data:"):
                got[0] += 1
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    time.sleep(0.5)
    per = MESSAGES // CONNECTIONS

    def produce(k):
        c = http.client.HTTPConnection("127.0.0.1", src)
        for n in range(per):
            body = json.dumps({"id": f"{k}-{n}", "sender": {"id": "u", "name": "Ann"}, "text": f"m {k} {n}"})
            c.request("POST", "/api/v1/groups/g/messages", body, {"content-type": "application/json"})
            r = c.getresponse()
            r.read()
            assert r.status == 202, r.status

    start = time.time()
    threads = [threading.Thread(target=produce, args=(k,)) for k in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    posted = time.time() - start
    done.wait(120)
    took = time.time() - start
    # The daemons first (they say goodbye on the broker), then the broker and Redis.
    for p in reversed(procs):
        p.terminate()
        p.wait()
    return got[0], posted, took


for cores in (1, 2):
    received, posted, took = run(cores)
    print(f"{cores} core(s): {received}/{MESSAGES} received in {took:.2f} s = {received / took:,.0f} msg/s "
          f"(posting took {posted:.2f} s)")
