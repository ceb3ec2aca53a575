#!/usr/bin/env python3
"""Ping-pong live migration of one demo guest with plain QEMU, no ferry: the
harness that showed the open live-migration panic (issue 6, docs/benchmarks.md)
is QEMU's too. It drives QEMU with ferry's flags and QMP sequence, polls the
guest's HTTP service every 50 ms and reports any guest oops after each move.

Needs, in $MIGRATE_LOOP_DIR (default /tmp/qemu-mig): demo.img (`ferry image
build-demo --out demo.img`), and its boot files vmlinuz and/or vmlinux (the
uncompressed kernel ferry boots) and initrd.img (from its /boot, or from a
ferry agent's vms/NAME/boot/); for --disk ferry, $FERRY_NBD (default
$MIGRATE_LOOP_DIR/ferry-nbd), built with `go build -o ferry-nbd ./bench/disk`.
Options: --kernel vmlinux, --disk nbd|file|ferry, --bw BYTES_PER_S,
--resume-delay S, --tapdown, --fresh-tap [--no-ipv6], --no-announce. Set up a
netns with a bridge and two taps with scripts/diag/migrate-loop-netns NAME,
then, as root:
    ip netns exec NAME python3 scripts/diag/migrate-loop.py --tag X --n 100 [opts]
Results: $MIGRATE_LOOP_DIR/run-X/loop.log, ending with a SUMMARY line.
"""
import argparse, json, os, re, socket, subprocess, sys, threading, time, urllib.request

D = os.environ.get("MIGRATE_LOOP_DIR", "/tmp/qemu-mig")
ap = argparse.ArgumentParser()
ap.add_argument("--tag", required=True)
ap.add_argument("--n", type=int, default=100)
ap.add_argument("--accel", default="tcg")
ap.add_argument("--cpu", default="")
ap.add_argument("--no-announce", action="store_true")
ap.add_argument("--no-load", action="store_true")
ap.add_argument("--deadline", type=float, default=0, help="unix time to stop at")
ap.add_argument("--tapdown", action="store_true", help="like ferry: take the source tap down after completion")
ap.add_argument("--kernel", default="vmlinuz")
ap.add_argument("--bw", type=int, default=0, help="max-bandwidth bytes/s (0: none)")
ap.add_argument("--fresh-tap", action="store_true", help="like ferry: recreate the target tap before each incoming, delete the source's after")
ap.add_argument("--no-ipv6", action="store_true", help="with --fresh-tap: disable IPv6 on the new tap before it goes up")
ap.add_argument("--resume-delay", type=float, default=0)
ap.add_argument("--disk", default="nbd", choices=["nbd", "file", "ferry"])
a = ap.parse_args()

W = f"{D}/run-{a.tag}"
os.makedirs(W, exist_ok=True)
LOG = open(f"{W}/loop.log", "a", buffering=1)
def log(*x):
    s = time.strftime("%H:%M:%S") + f".{int(time.time()*1000)%1000:03d} " + " ".join(str(i) for i in x)
    print(s, file=LOG); print(s, flush=True)

GUEST_IP = "10.77.0.10"
MAC = "52:54:00:12:34:56"
CMDLINE = f"console=ttyS0 root=/dev/vda panic=-1 quiet ferry.name=demo ferry.ip={GUEST_IP}/24 ferry.gw=10.77.0.1"

# disk: a private copy per run, served by qemu-storage-daemon over a unix socket
img = f"{W}/disk.img"
if not os.path.exists(img):
    subprocess.check_call(["cp", "--sparse=always", f"{D}/demo.img", img])
nbdsock = f"{W}/nbd.sock"
qsd = None
if a.disk == "ferry":
    if os.path.exists(nbdsock): os.unlink(nbdsock)
    qsd = subprocess.Popen([os.environ.get("FERRY_NBD", f"{D}/ferry-nbd"), "serve", img, nbdsock], stdout=open(f"{W}/qsd.log", "a"), stderr=subprocess.STDOUT)
    for _ in range(100):
        if os.path.exists(nbdsock): break
        time.sleep(0.05)
if a.disk == "nbd":
    if os.path.exists(nbdsock): os.unlink(nbdsock)
    qsd = subprocess.Popen(["qemu-storage-daemon",
        "--blockdev", f"driver=file,node-name=f0,filename={img},cache.direct=off",
        "--nbd-server", f"addr.type=unix,addr.path={nbdsock}",
        "--export", "type=nbd,id=e0,node-name=f0,writable=on,name=disk0"],
        stdout=open(f"{W}/qsd.log", "a"), stderr=subprocess.STDOUT)
    for _ in range(100):
        if os.path.exists(nbdsock): break
        time.sleep(0.05)

class QMP:
    def __init__(self, path):
        for _ in range(200):
            try:
                self.s = socket.socket(socket.AF_UNIX); self.s.connect(path); break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("qmp connect " + path)
        self.f = self.s.makefile("rwb", buffering=0)
        self.events = []
        self._read()  # greeting
        self.cmd("qmp_capabilities")
    def _read(self):
        l = self.f.readline()
        if not l: raise EOFError("qmp closed")
        return json.loads(l)
    def cmd(self, name, args=None):
        m = {"execute": name}
        if args is not None: m["arguments"] = args
        self.f.write((json.dumps(m) + "\n").encode())
        while True:
            r = self._read()
            if "event" in r:
                self.events.append(r); continue
            if "error" in r: raise RuntimeError(f"{name}: {r['error']}")
            return r.get("return")

procs = {}
def start_vm(name, tap, incoming):
    sd = f"{W}/{name}"
    os.makedirs(sd, exist_ok=True)
    for fn in ("qmp.sock", "console.sock"):
        try: os.unlink(f"{sd}/{fn}")
        except FileNotFoundError: pass
    if a.disk in ("nbd", "ferry"):
        disk = {"driver": "raw", "node-name": "disk0", "discard": "unmap",
                "file": {"driver": "nbd", "server": {"type": "unix", "path": nbdsock}, "export": "disk0" if a.disk == "nbd" else "",
                         "reconnect-delay": 10, "discard": "unmap"}}
    else:
        disk = {"driver": "raw", "node-name": "disk0", "discard": "unmap",
                "file": {"driver": "file", "filename": img, "discard": "unmap", "locking": "off"}}
    args = ["qemu-system-x86_64", "-name", f"guest=qmig-{a.tag}-{name},debug-threads=on",
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
            "-machine", "pc", "-accel", a.accel]
    if a.cpu: args += ["-cpu", a.cpu]
    args += ["-m", "256", "-smp", "1", "-S", "-pidfile", f"{sd}/qemu.pid",
             "-chardev", f"socket,id=qmp,path={sd}/qmp.sock,server=on,wait=off",
             "-mon", "chardev=qmp,mode=control",
             "-chardev", f"socket,id=ser0,path={sd}/console.sock,server=on,wait=off,logfile={W}/console.log,logappend=on",
             "-serial", "chardev:ser0",
             "-kernel", f"{D}/{a.kernel}", "-initrd", f"{D}/initrd.img", "-append", CMDLINE,
             "-blockdev", json.dumps(disk), "-device", "virtio-blk-pci,drive=disk0,bootindex=1",
             "-netdev", f"tap,id=net0,ifname={tap},script=no,downscript=no,vhost=off",
             "-device", f"virtio-net-pci,netdev=net0,romfile=,mac={MAC}"]
    if incoming: args += ["-incoming", "defer"]
    p = subprocess.Popen(args, stdout=open(f"{sd}/qemu.log", "a"), stderr=subprocess.STDOUT)
    procs[name] = p
    return p, QMP(f"{sd}/qmp.sock")

# HTTP poller: every 50 ms, 250 ms timeout
state = {"boots": None, "ok": 0, "fail": 0, "last_ok": 0, "boots_seen": set(), "run": True}
def poller():
    while state["run"]:
        t = time.time()
        if not a.no_load:
            try:
                with urllib.request.urlopen(f"http://{GUEST_IP}/", timeout=0.25) as r:
                    j = json.loads(r.read())
                state["ok"] += 1; state["last_ok"] = time.time()
                if state["boots"] != j.get("boots"):
                    log("HTTP boots", state["boots"], "->", j.get("boots"), j)
                    state["boots"] = j.get("boots")
            except Exception as e:
                state["fail"] += 1
        time.sleep(max(0, 0.05 - (time.time() - t)))
threading.Thread(target=poller, daemon=True).start()

def console_size():
    try: return os.path.getsize(f"{W}/console.log")
    except FileNotFoundError: return 0
PANIC_RE = re.compile(rb"Kernel panic|BUG|huh, entered|Oops|general protection|stack-protector|Call Trace|WARNING:|Linux version")

def check_console(off):
    with open(f"{W}/console.log", "rb") as f:
        f.seek(off); data = f.read()
    return data if PANIC_RE.search(data) else None

# boot first VM on tap A
cur, cur_tap, other_tap = "A", "qtapA", "qtapB"
p, q = start_vm(cur, cur_tap, False)
q.cmd("cont")
t0 = time.time()
while time.time() - t0 < 180:
    if state["last_ok"]: break
    if a.no_load:
        # probe once a second only
        try:
            urllib.request.urlopen(f"http://{GUEST_IP}/", timeout=1).read(); break
        except Exception: pass
    time.sleep(0.5)
log("booted in", round(time.time() - t0, 1), "s; boots", state["boots"])
time.sleep(3)

panics = 0; done = 0; port = 4444
results = []
for i in range(a.n):
    if a.deadline and time.time() > a.deadline:
        log("deadline reached"); break
    if os.path.exists(f"{W}/stop"):
        log("stop file"); break
    nxt = "B" if cur == "A" else "A"
    port += 1
    off = console_size()
    if a.fresh_tap:
        subprocess.call(["ip", "link", "del", other_tap], stderr=subprocess.DEVNULL)
        subprocess.check_call(["ip", "tuntap", "add", "dev", other_tap, "mode", "tap", "vnet_hdr"])
        if a.no_ipv6:
            with open(f"/proc/sys/net/ipv6/conf/{other_tap}/disable_ipv6", "w") as f:
                f.write("1")
        subprocess.check_call(["ip", "link", "set", other_tap, "master", "qbr0"])
        subprocess.check_call(["ip", "link", "set", other_tap, "up"])
    tp, tq = start_vm(nxt, other_tap, True)
    tq.cmd("migrate-set-capabilities", {"capabilities": [{"capability": c, "state": True} for c in ("late-block-activate", "events", "return-path")]})
    tq.cmd("migrate-incoming", {"uri": f"tcp:127.0.0.1:{port}"})
    q.cmd("migrate-set-capabilities", {"capabilities": [{"capability": c, "state": True} for c in ("events", "return-path")]})
    q.cmd("migrate-set-parameters", {"downtime-limit": 300, "max-bandwidth": a.bw})
    tm = time.time()
    q.cmd("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
    while True:
        info = q.cmd("query-migrate")
        st = info.get("status")
        if st in ("completed", "failed", "cancelled"): break
        time.sleep(0.25)
    if st != "completed":
        log("migration", i, "status", st, info); tp.kill(); tp.wait(); continue
    # settle source out of finish-migrate
    for _ in range(100):
        if q.cmd("query-status")["status"] != "finish-migrate": break
        time.sleep(0.01)
    if a.tapdown:
        subprocess.call(["ip", "link", "set", cur_tap, "down"])
    # target: wait out inmigrate, cont, announce
    for _ in range(1000):
        ts = tq.cmd("query-status")["status"]
        if ts != "inmigrate": break
        time.sleep(0.05)
    time.sleep(a.resume_delay)
    tq.cmd("cont")
    tcont = time.time()
    log(f"cont {i} at {tcont:.3f} (migrate at {tm:.3f})")
    if not a.no_announce:
        tq.cmd("announce-self", {"initial": 50, "max": 550, "rounds": 5, "step": 100})
    # quit source
    try: q.cmd("quit")
    except Exception: pass
    p.wait()
    q.s.close()
    if a.fresh_tap:
        subprocess.call(["ip", "link", "del", cur_tap])
    if a.tapdown:
        subprocess.call(["ip", "link", "set", cur_tap, "up"])
    cur, p, q = nxt, tp, tq
    cur_tap, other_tap = other_tap, cur_tap
    done += 1
    # observe for 2.5 s after cont
    time.sleep(max(0, 2.5 - (time.time() - tcont)))
    bad = check_console(off)
    dt = info.get("downtime"); tt = info.get("total-time")
    if bad:
        panics += 1
        log(f"MIG {i}: PANIC after cont; total {tt}ms downtime {dt}ms; console:\n" + bad.decode(errors="replace")[-3000:])
        # wait for the guest to reboot (panic=-1 reboots immediately) and come back
        t1 = time.time()
        while time.time() - t1 < 120 and time.time() - state["last_ok"] > 1: time.sleep(0.5)
        time.sleep(3)
    else:
        log(f"mig {i} ok -> {cur}: total {tt}ms downtime {dt}ms http ok/fail {state['ok']}/{state['fail']} boots {state['boots']}")
    if p.poll() is not None:
        log("target qemu exited", p.returncode); break

log(f"SUMMARY tag={a.tag} accel={a.accel} cpu={a.cpu or 'default'} announce={not a.no_announce} load={not a.no_load} migrations={done} panics={panics} boots={state['boots']} http ok/fail {state['ok']}/{state['fail']}")
state["run"] = False
try: q.cmd("quit")
except Exception: pass
for pp in procs.values():
    if pp.poll() is None: pp.kill()
    pp.wait()
if qsd: qsd.terminate(); qsd.wait()
