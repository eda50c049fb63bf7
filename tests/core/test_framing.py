"""The one framing shared by the RP client process and the telemetry worker."""

import marshal
import pickle

import pytest

from asyncflow_hpc.framing import FrameReader, frame, frame_bytes, read_frame


def test_frames_split_at_any_byte_boundary():
    msgs = [("a", 1), {"b": [1, 2, 3]}, "x" * 70_000, ()]
    stream = b"".join(frame(m) for m in msgs)
    for step in (1, 3, 4, 5, 1000, len(stream)):
        reader = FrameReader()
        got = []
        for i in range(0, len(stream), step):
            got.extend(reader.feed(stream[i:i + step]))
        assert got == msgs
        assert reader.pending == 0


def test_codec_is_the_callers():
    data = frame(("L", 1.5, [1, 2]), dumps=lambda o: marshal.dumps(o, 2))
    assert FrameReader(loads=marshal.loads).feed(data) == [("L", 1.5, [1, 2])]


def test_a_bad_payload_costs_only_its_frame_when_asked():
    errors = []
    reader = FrameReader(on_error=errors.append)
    stream = frame(1) + frame_bytes(b"not a pickle") + frame(2)
    assert reader.feed(stream) == [1, 2]
    assert len(errors) == 1
    with pytest.raises(pickle.UnpicklingError):
        FrameReader().feed(frame_bytes(b"not a pickle"))


def test_corrupt_length_is_refused():
    with pytest.raises(ValueError, match="corrupt"):
        FrameReader().feed(b"\xff\xff\xff\xff....")


def test_read_frame_blocking_and_eof():
    stream = bytearray(frame({"k": 1}))

    def recv(n):
        chunk = bytes(stream[:min(n, 3)])
        del stream[:len(chunk)]
        return chunk

    assert read_frame(recv) == {"k": 1}
    with pytest.raises(EOFError):
        read_frame(recv)
