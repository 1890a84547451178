# gbdeploy's far end in Python, sent to the target and run there by `python3 -I -S -c` (nothing
# of gbdeploy is installed on a target). Kept to Python 3.4 syntax: old targets (the tests check
# it). Two ways to run it:
#
#   (no arguments)          the session helper (`remote/session.py`): reads requests from stdin
#       run N\n + N bytes of command  -> ran STATUS NOUT NERR\n + stdout + stderr
#       put SIZE N\n + N bytes of path + SIZE bytes
#                                     -> put SHA256\n, or refused N\n + reason (and it exits)
#   receive PATH SIZE METHOD  the upload's receiver on a channel of its own (`transfer.py`): the
#       stream on stdin (METHOD zstd: through `zstd -d`) until its end, into PATH; prints
#       `python3 SHA256`, or exits 1 with the reason on stderr.
#
# Both write the file the same way (`write_new`): a new file, never written through a symlink,
# hashed as it is written, on disk before it is renamed over the binary. Its writing to disk
# starts while the bytes still arrive (`writeback`), so the fdatasync at the end, on the deploy's
# path, finds little left to do (measured: 50 to 80 ms less for 150 MB on ext4).
import hashlib
import os
import select
import stat
import subprocess
import sys

BLOCK = 1 << 20
WRITEBACK_EVERY = 8 << 20  # bytes written between two starts of their writing to disk
SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writing the range, do not wait


def writeback_function():
    """libc's sync_file_range(fd, offset, count, flags), or None where there is none (not Linux,
    no ctypes): it starts writing dirty pages to disk without waiting for them."""
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).sync_file_range
        function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        return function
    except Exception:
        return None


def writeback(fd, offset, count):
    """Start writing `count` bytes of `fd` from `offset` to disk (a hint: errors are ignored,
    the fdatasync at the end is what makes the file safe)."""
    global sync_file_range
    if sync_file_range is False:
        sync_file_range = writeback_function()
    if sync_file_range is not None:
        sync_file_range(fd, offset, count, SYNC_FILE_RANGE_WRITE)


sync_file_range = False  # not looked up yet


def widen(fd):
    """A 1 MiB pipe, where the kernel allows it (fewer wake-ups per MiB)."""
    try:
        import fcntl

        fcntl.fcntl(fd, 1031, BLOCK)  # F_SETPIPE_SZ
    except Exception:
        pass


class Refused(Exception):
    pass


def write_new(path, chunks):
    """Write the memoryviews `chunks` yields into `path`, created anew, and return their sha256
    (hex) and count. On any failure the file is removed (never a device such as /dev/full) and
    Refused raised with the reason."""
    created = False
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, 0o666)
    except OSError as error:
        raise Refused("%s: %s" % (path, error.strerror or error))
    try:
        created = stat.S_ISREG(os.fstat(fd).st_mode)
        digest = hashlib.sha256()
        count = 0
        flushed = 0  # bytes whose writing to disk has been started
        for chunk in chunks:
            digest.update(chunk)
            count += len(chunk)
            while chunk:
                chunk = chunk[os.write(fd, chunk) :]
            if created and count - flushed >= WRITEBACK_EVERY:
                writeback(fd, flushed, count - flushed)
                flushed = count
        if created:
            os.fdatasync(fd)  # on disk before it is renamed over the binary
        os.close(fd)
    except (OSError, Refused) as error:
        try:
            os.close(fd)
        except OSError:
            pass
        if created:
            try:
                os.unlink(path)
            except OSError:
                pass
        if isinstance(error, Refused):
            raise
        raise Refused("%s: %s" % (path, error.strerror or error))
    return digest.hexdigest(), count


def read_chunks(fd, left=None):
    """Memoryviews read from `fd` into one reused buffer: `left` bytes exactly (Refused when the
    stream ends short), or until its end (None)."""
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)
    while left is None or left > 0:
        want = BLOCK if left is None else min(left, BLOCK)
        count = os.readv(fd, [view[:want]])
        if not count:
            if left is None:
                return
            raise Refused("the stream ended %d bytes short" % left)
        if left is not None:
            left -= count
        yield view[:count]


def remove_regular(path):
    """Remove `path` if it is a regular file (never a device such as /dev/full)."""
    try:
        if stat.S_ISREG(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


# --- the upload's receiver
def receive(path, size, method):
    child = None
    source = 0
    widen(0)
    if method == "zstd":
        child = subprocess.Popen(["zstd", "-d", "-q", "-c"], stdout=subprocess.PIPE)
        source = child.stdout.fileno()
        widen(source)

    def fail(message):
        if child is not None:
            child.kill()
        sys.stderr.write(message + "\n")
        sys.exit(1)

    try:
        digest, got = write_new(path, read_chunks(source))
    except Refused as error:
        fail(str(error))
    if child is not None and child.wait() != 0:
        remove_regular(path)
        fail("decompressing the stream failed (zstd exit %d)" % child.returncode)
    if got != size:
        remove_regular(path)
        fail("the stream carried %d bytes, not the %d announced" % (got, size))
    sys.stdout.write("python3 %s\n" % digest)


# --- the session helper
pending = bytearray()


def fill(limit):
    data = os.read(0, limit)
    if not data:
        sys.exit(0)
    pending.extend(data)


def line():
    while True:
        at = pending.find(b"\n")
        if at >= 0:
            text = bytes(pending[:at])
            del pending[: at + 1]
            return text
        fill(65536)


def exact(count):
    while len(pending) < count:
        fill(max(65536, count - len(pending)))
    data = bytes(pending[:count])
    del pending[:count]
    return data


def send(*parts):
    view = memoryview(b"".join(parts))
    while view:
        view = view[os.write(1, view) :]


def header(*words):
    return (" ".join(str(word) for word in words) + "\n").encode()


def take(ready, reading, got):
    """Read once from each ready pipe into `got`; a pipe at its end leaves `reading`."""
    for fd in ready:
        data = os.read(fd, 65536)
        if data:
            got[fd].append(data)
        else:
            reading.remove(fd)


def run(command):
    try:
        child = subprocess.Popen(
            [b"sh", b"-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as error:
        message = ("cannot run sh: %s\n" % error).encode()
        send(header("ran", 127, 0, len(message)), message)
        return
    out_fd, err_fd = child.stdout.fileno(), child.stderr.fileno()
    got = {out_fd: [], err_fd: []}
    reading = [out_fd, err_fd]
    while reading:
        ready = select.select(reading, [], [], 0.05)[0]
        take(ready, reading, got)
        if not ready and child.poll() is not None:
            # It may have written its last words and exited after the select above (a busy
            # machine): they are in the pipes, which a process it left running may still hold
            # open, so take what is there, without waiting for their end.
            for _ in range(64):
                ready = select.select(reading, [], [], 0)[0]
                if not ready:
                    break
                take(ready, reading, got)
            break
    status = child.wait()
    child.stdout.close()
    child.stderr.close()
    if status < 0:
        status = 128 - status
    out, err = b"".join(got[out_fd]), b"".join(got[err_fd])
    send(header("ran", status, len(out), len(err)), out, err)


def put(size, path):
    """`size` bytes from the channel into `path`, a new file; what was read ahead comes first."""

    def chunks():
        left = size
        if pending:
            take = bytes(pending[:left])
            del pending[: len(take)]
            left -= len(take)
            yield memoryview(take)
        for chunk in read_chunks(0, left):
            yield chunk

    try:
        if os.path.isfile(path) or os.path.islink(path):
            os.unlink(path)
        digest, _ = write_new(path, chunks())
    except (OSError, Refused) as error:
        message = str(getattr(error, "strerror", None) or error).encode("utf-8", "replace")
        try:
            send(header("refused", len(message)), message)
        except OSError:
            pass
        sys.exit(1)
    send(b"put " + digest.encode() + b"\n")


def serve():
    widen(0)
    send(b"gbdeploy-session python3\n")
    while True:
        words = line().split(b" ")
        if words[0] == b"run" and len(words) == 2:
            run(exact(int(words[1])))
        elif words[0] == b"put" and len(words) == 3:
            size = int(words[1])
            put(size, exact(int(words[2])))
        else:
            send(b"refused 15\nunknown request")
            sys.exit(2)


# As `python3 -c` runs it; importing it (a tool walking the package) runs nothing.
if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "receive":
        receive(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        serve()
