//! Content hashing: the hex sha256 that keys adapter files (registry rows, bank residency)
//! and checks fetched models.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Hex sha256 of a file, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hex sha256 of bytes in memory.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_bytes_agree_with_the_known_digest() {
        // sha256("abc"), FIPS 180-2 appendix B.1.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(b"abc"), abc);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), abc);
        // Larger than one read chunk.
        let big = vec![7u8; (1 << 20) + 3];
        std::fs::write(&path, &big).unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256_hex(&big));
        assert!(sha256_file(&dir.path().join("missing")).is_err());
    }
}
