#!/usr/bin/env python3
"""Lists the BPF programs tcx runs on a network interface, in run order.

Debian 12's iproute2 and bpftool (7.1) predate tcx (Linux 6.6), so neither
`tc filter show` nor `bpftool net show` lists tcx links; this asks the kernel
directly (BPF_PROG_QUERY of BPF_TCX_INGRESS/BPF_TCX_EGRESS), in the current
network namespace.

Usage: tools/tcx_progs.py IFNAME      (e.g. ip netns exec NODE tools/tcx_progs.py eth-out)
Prints {"ingress": [{"id": N, "name": "snat_ingress"}], "egress": [...]}.
Exit status 3: this kernel has no tcx; 1: another error (printed).
"""
import ctypes
import json
import os
import socket
import struct
import sys

NR_BPF = 321  # x86_64
BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD, BPF_PROG_QUERY = 13, 15, 16
BPF_TCX_INGRESS, BPF_TCX_EGRESS = 46, 47
EINVAL = 22
MAX_PROGS = 64
PROG_INFO_SIZE = 256  # covers bpf_prog_info up to its name (offset 64)
PROG_INFO_NAME = 64

libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    ret = libc.syscall(NR_BPF, cmd, attr, len(attr.raw))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def query(ifindex, attach_type):
    ids = (ctypes.c_uint32 * MAX_PROGS)()
    # union bpf_attr.query: target_ifindex, attach_type, query_flags,
    # attach_flags, prog_ids (u64), count (in: room, out: programs).
    attr = ctypes.create_string_buffer(
        struct.pack("=IIIIQI", ifindex, attach_type, 0, 0, ctypes.addressof(ids), MAX_PROGS), 64)
    bpf(BPF_PROG_QUERY, attr)
    return list(ids[:struct.unpack_from("=I", attr.raw, 24)[0]])


def name_of(prog_id):
    try:
        fd = bpf(BPF_PROG_GET_FD_BY_ID, ctypes.create_string_buffer(struct.pack("=I", prog_id), 16))
    except OSError:
        return ""  # detached and freed since the query
    try:
        info = ctypes.create_string_buffer(PROG_INFO_SIZE)
        bpf(BPF_OBJ_GET_INFO_BY_FD,
            ctypes.create_string_buffer(struct.pack("=IIQ", fd, PROG_INFO_SIZE, ctypes.addressof(info)), 16))
        return info.raw[PROG_INFO_NAME:PROG_INFO_NAME + 16].split(b"\0", 1)[0].decode()
    finally:
        os.close(fd)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        ifindex = socket.if_nametoindex(sys.argv[1])
    except OSError:
        sys.exit(f"tcx_progs: no interface {sys.argv[1]!r} in this network namespace")
    out = {}
    for direction, attach_type in (("ingress", BPF_TCX_INGRESS), ("egress", BPF_TCX_EGRESS)):
        try:
            ids = query(ifindex, attach_type)
        except OSError as e:
            if e.errno == EINVAL:
                print("tcx_progs: this kernel has no tcx (Linux 6.6 or later)", file=sys.stderr)
                sys.exit(3)
            sys.exit(f"tcx_progs: query {direction} of {sys.argv[1]}: {e}")
        out[direction] = [{"id": i, "name": name_of(i)} for i in ids]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
