"""A berth-buildd client written against the .proto alone, on gRPC's C core.

Usage: client.py SOCKET STUBS_DIR COMMAND [ARGS...]
Prints one JSON object per result line; exits non-zero on an unexpected
failure. The Rust test (grpc_clients.rs) checks what it prints.
"""
import io
import json
import sys
import tarfile

sock, stubs, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
sys.path.insert(0, stubs)

import grpc  # noqa: E402
import builder_pb2 as pb  # noqa: E402
import builder_pb2_grpc as rpc  # noqa: E402

# The default target form of grpcio for unix sockets: the C core sends the
# socket path as :authority, which is what this test is about.
channel = grpc.insecure_channel("unix://" + sock)
stub = rpc.BuilderStub(channel)
KIND = pb.BuildEvent.Kind.Name


def out(**kw):
    print(json.dumps(kw), flush=True)


def context_tar(path):
    """The context directory as one uncompressed tar stream."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        t.add(path, arcname=".")
    return buf.getvalue()


def requests(context, tags, chunk):
    yield pb.BuildRequest(options=pb.BuildOptions(tags=tags))
    data = context_tar(context)
    for i in range(0, len(data), chunk):
        yield pb.BuildRequest(context_chunk=data[i : i + chunk])


def build(context, tags, timeout=None, chunk=64 << 10):
    events = []
    try:
        for ev in stub.Build(requests(context, tags, chunk), timeout=timeout):
            events.append({"kind": KIND(ev.kind), "message": ev.message,
                           "digest": ev.image_digest, "step": ev.step})
        code, details = "OK", ""
    except grpc.RpcError as e:
        code, details = e.code().name, e.details()
    out(op="build", code=code, details=details, events=events)


def call(op, f):
    try:
        r = f()
        out(op=op, code="OK", result=r)
    except grpc.RpcError as e:
        out(op=op, code=e.code().name, details=e.details())


if cmd == "build":
    context, tags, timeout = args[0], args[1].split(",") if args[1] else [], None
    if len(args) > 2:
        timeout = float(args[2])
    build(context, tags, timeout)
elif cmd == "list":
    call("list", lambda: [{"tags": list(i.tags), "digest": i.digest, "size": i.size}
                          for i in stub.ListImages(pb.ListImagesRequest()).images])
elif cmd == "inspect":
    def inspect():
        r = stub.InspectImage(pb.ImageRef(name=args[0]))
        return {"digest": r.manifest_digest, "manifest": json.loads(r.manifest_json),
                "config": json.loads(r.config_json)}
    call("inspect", inspect)
elif cmd == "export":
    # args: image, format ("" = unset), destination file
    def export():
        n = 0
        biggest = 0
        with open(args[2], "wb") as f:
            for c in stub.Export(pb.ExportRequest(image=args[0], format=args[1])):
                f.write(c.data)
                n += len(c.data)
                biggest = max(biggest, len(c.data))
        return {"bytes": n, "largest_chunk": biggest}
    call("export", export)
elif cmd == "history":
    call("history", lambda: [{"created_by": h.created_by, "empty_layer": h.empty_layer}
                             for h in stub.History(pb.ImageRef(name=args[0])).entries])
elif cmd == "tag":
    call("tag", lambda: str(stub.TagImage(pb.TagImageRequest(source=args[0], tag=args[1]))))
elif cmd == "version":
    def version():
        v = stub.Version(pb.Empty())
        return {"version": v.version, "api_version": v.api_version, "os": v.os, "arch": v.arch}
    call("version", version)
elif cmd == "info":
    def info():
        i = stub.Info(pb.Empty())
        return {"store_root": i.store_root, "runtime": i.runtime, "platform": i.platform,
                "default_compression": i.default_compression,
                "default_network": i.default_network,
                "max_context_size": i.max_context_size, "images": i.images}
    call("info", info)
else:
    sys.exit("unknown command " + cmd)
