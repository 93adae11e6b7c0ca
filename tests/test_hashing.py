import hashlib

from core.hashing import BLOCK, file_sha256, update_from_file


def test_file_hash_reads_in_blocks_and_matches_hashing_the_bytes(tmp_path):
    data = bytes(range(256)) * (BLOCK // 256 * 2 + 3)  # more than two blocks, not a multiple of one
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    assert file_sha256(p) == hashlib.sha256(data).hexdigest()
    d = hashlib.sha256(b"prefix")
    assert update_from_file(d, p) is d and d.hexdigest() == hashlib.sha256(b"prefix" + data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
