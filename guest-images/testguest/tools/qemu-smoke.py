#!/usr/bin/env python3
"""Smoke test of the test guest under QEMU microvm (run as root for the net case).

  qemu-smoke.py [ELF]     default ELF: guest-images/out/testguest.elf

Boots the guest in several configurations and checks its console lines: 1 and 2
vCPUs, 256 MiB and 4 GiB, counter + dirty, disk (host blocks and guest blocks checked
on the image afterwards), net (ARP, ICMP echo, UDP echo over a tap in 198.51.100.0/24,
only when root), poweroff and reset ending QEMU. Every QEMU it starts is killed; the
tap it creates is deleted.
"""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import diskimg  # noqa: E402

ELF = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "out", "testguest.elf")
TAP, HOST_IP, GUEST_IP = "tgsmoke0", "198.51.100.1", "198.51.100.2"


def tsc_khz():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    return 2000000


def qemu(mem, smp, append, extra=()):
    cmd = [
        "qemu-system-x86_64", "-M", "microvm,x-option-roms=off,rtc=off", "-enable-kvm",
        "-cpu", "host,-arch-capabilities", "-m", str(mem), "-smp", str(smp), "-nodefaults",
        "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio",
        "-global", "virtio-mmio.force-legacy=false", "-kernel", ELF,
        "-append", "nova.tsc_khz=%d %s" % (tsc_khz(), append), *extra,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def lines_until(p, pred, timeout):
    """Reads lines until pred(lines) is true, QEMU exits, or timeout; returns (lines, exited)."""
    out, end = [], time.monotonic() + timeout
    os.set_blocking(p.stdout.fileno(), False)
    buf = ""
    while time.monotonic() < end:
        try:
            chunk = os.read(p.stdout.fileno(), 65536)
        except BlockingIOError:
            chunk = None
        if chunk:
            buf += chunk.decode(errors="replace")
            *done, buf = buf.split("\n")
            out += done
            if pred(out):
                return out, False
        elif chunk == b"" or p.poll() is not None:
            p.wait()
            return out + ([buf] if buf else []), True
        else:
            time.sleep(0.01)
    return out, False


def stop(p):
    if p.poll() is None:
        p.kill()
    p.wait()


FAILS = []


def check(name, ok, lines):
    print("%-40s %s" % (name, "ok" if ok else "FAIL"))
    if not ok:
        FAILS.append(name)
        for line in lines[-20:]:
            print("    " + line)


def boot(name, mem, smp, want_mib, want_cpus):
    p = qemu(mem, smp, "nova.workload=poweroff")
    lines, exited = lines_until(p, lambda l: False, 10)
    stop(p)
    ok = (exited and p.returncode == 0 and lines[:1] == ["NOVA-BOOTED"]
          and "NOVA-MEM mib=%d" % want_mib in lines and "NOVA-CPUS count=%d" % want_cpus in lines
          and len([x for x in lines if x.startswith("NOVA-CPU apic=")]) == want_cpus
          and lines[-1:] == ["NOVA-POWEROFF"])
    check(name, ok, lines)


def main():
    boot("boot 1 vCPU 256 MiB + poweroff", 256, 1, 256, 1)
    boot("boot 2 vCPUs 4096 MiB + poweroff", 4096, 2, 4096, 2)

    p = qemu(256, 1, "nova.workload=reset")
    lines, exited = lines_until(p, lambda l: False, 10)
    stop(p)
    check("reset ends QEMU (-no-reboot)", exited and lines[-1:] == ["NOVA-RESET"], lines)

    p = qemu(4096, 2, "nova.workload=counter,dirty:64:max")
    lines, _ = lines_until(p, lambda l: sum(x.startswith("NOVA-DIRTY") for x in l) >= 3, 30)
    stop(p)
    ticks = [int(x.split()[1]) for x in lines if x.startswith("NOVA-TICK ")]
    dirty = [x for x in lines if x.startswith("NOVA-DIRTY")]
    check("counter + dirty:64:max, 3 passes", len(dirty) >= 3 and all(x.endswith("errors=0") for x in dirty)
          and ticks == list(range(len(ticks))) and len(ticks) > 100, dirty or lines)

    with tempfile.TemporaryDirectory() as d:
        img = os.path.join(d, "disk.img")
        subprocess.run([sys.executable, os.path.join(HERE, "diskimg.py"), "make", img, "1"], check=True)
        p = qemu(256, 1, "nova.workload=disk", ["-drive", "id=d0,file=%s,format=raw,if=none" % img,
                                                "-device", "virtio-blk-device,drive=d0"])
        lines, _ = lines_until(p, lambda l: sum(x.startswith("NOVA-DISK") for x in l) >= 3, 30)
        stop(p)
        disk = [x for x in lines if x.startswith("NOVA-DISK")]
        good = ["NOVA-DISK pass=%d host_ok=16 written=32 verified=32 errors=0" % g for g in (1, 2, 3)]
        with open(img, "rb") as f:
            data = f.read(48 * 4096)
        host = sum(diskimg.check_block(data[i * 4096:(i + 1) * 4096], diskimg.HOST_MAGIC, i) is not None
                   for i in range(16))
        gens = {diskimg.check_block(data[i * 4096:(i + 1) * 4096], diskimg.GUEST_MAGIC, i) for i in range(16, 48)}
        check("disk: 3 passes, image checks", disk[:3] == good and host == 16 and None not in gens, disk or lines)

    if os.geteuid() == 0:
        net_case()
    else:
        print("net: skipped (needs root for a tap)")
    print("FAILED: " + ", ".join(FAILS) if FAILS else "all ok")
    sys.exit(1 if FAILS else 0)


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def net_case():
    subprocess.run(["ip", "tuntap", "add", TAP, "mode", "tap"], check=True)
    p = None
    try:
        subprocess.run(["ip", "addr", "add", HOST_IP + "/24", "dev", TAP], check=True)
        subprocess.run(["ip", "link", "set", TAP, "up"], check=True)
        p = qemu(256, 1, "nova.workload=net,counter nova.ip=%s/24" % GUEST_IP,
                 ["-netdev", "tap,id=n0,ifname=%s,script=no,downscript=no" % TAP,
                  "-device", "virtio-net-device,netdev=n0"])
        lines, _ = lines_until(p, lambda l: any(x.startswith("NOVA-NET") for x in l), 10)
        check("net ready line", any(x.startswith("NOVA-NET ip=%s mac=" % GUEST_IP) and x.endswith("ready=1")
                                     for x in lines), lines)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(2)
        ok = True
        for msg in (b"nova", b"x" * 1400, b"", b"odd"):
            u.sendto(msg, (GUEST_IP, 7))
            try:
                data, src = u.recvfrom(2000)
                ok &= data == msg and src == (GUEST_IP, 7)
            except socket.timeout:
                ok = False
        check("net UDP echo (port 7)", ok, [])
        r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        r.settimeout(2)
        ok = True
        for seq in range(3):
            payload = os.urandom(56)
            h = struct.pack("!BBHHH", 8, 0, 0, 0x4E56, seq)
            r.sendto(struct.pack("!BBHHH", 8, 0, csum(h + payload), 0x4E56, seq) + payload, (GUEST_IP, 0))
            got = False
            end = time.monotonic() + 2
            while not got and time.monotonic() < end:
                try:
                    d, a = r.recvfrom(2000)
                except socket.timeout:
                    break
                ic = d[(d[0] & 0xF) * 4:]
                got = a[0] == GUEST_IP and ic[0] == 0 and ic[8:] == payload and csum(ic) == 0
            ok &= got
        check("net ICMP echo", ok, [])
        neigh = subprocess.run(["ip", "neigh", "show", GUEST_IP, "dev", TAP], capture_output=True, text=True).stdout
        check("net ARP (neighbour resolved)", "lladdr" in neigh, [neigh])
    finally:
        if p:
            stop(p)
        subprocess.run(["ip", "link", "del", TAP])


if __name__ == "__main__":
    main()
