//! Standard base64 (RFC 4648, with padding) for bundle files in the apply request. A few dozen
//! lines here instead of a dependency: the agent only needs the one alphabet. The decoder is
//! strict about shape (no whitespace, padding required, only at the end) so a damaged request is
//! refused rather than half-read; the digest check after decoding is what proves the content.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Why a string is not strict standard base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    /// The length is not a multiple of four.
    #[error("length {0} is not a multiple of 4")]
    Length(usize),
    /// A byte outside the alphabet, or padding in the wrong place.
    #[error("invalid base64 byte at offset {0}")]
    Byte(usize),
}

/// Encodes bytes as padded standard base64.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Encodes `bytes` into `out` a slice at a time, so a large file never exists twice in memory
/// (the agent keeps each applied bundle on disk as its apply request).
pub fn encode_to(out: &mut (impl std::io::Write + ?Sized), bytes: &[u8]) -> std::io::Result<()> {
    // A multiple of 3, so only the last slice has padding.
    const SLICE: usize = 3 * 16 * 1024;
    for slice in bytes.chunks(SLICE) {
        out.write_all(encode(slice).as_bytes())?;
    }
    Ok(())
}

fn value(b: u8) -> Option<u32> {
    match b {
        b'A'..=b'Z' => Some(u32::from(b - b'A')),
        b'a'..=b'z' => Some(u32::from(b - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(b - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes padded standard base64, refusing anything else.
pub fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    let src = text.as_bytes();
    if src.len() % 4 != 0 {
        return Err(Base64Error::Length(src.len()));
    }
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let quads = src.len() / 4;
    for (q, quad) in src.chunks(4).enumerate() {
        let last = q + 1 == quads;
        let pad = quad.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(Base64Error::Byte(q * 4 + 4 - pad));
        }
        let mut n = 0u32;
        for (i, &b) in quad.iter().enumerate() {
            let v = if i >= 4 - pad {
                0
            } else {
                value(b).ok_or(Base64Error::Byte(q * 4 + i))?
            };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(encode(plain.as_bytes()), enc);
            assert_eq!(decode(enc).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn all_bytes_round_trip() {
        let bytes: Vec<u8> = (0..=255).chain((0..=255).rev()).collect();
        for len in 0..bytes.len() {
            assert_eq!(decode(&encode(&bytes[..len])).unwrap(), &bytes[..len]);
        }
    }

    #[test]
    fn encoding_into_a_writer_a_slice_at_a_time_is_the_same() {
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for len in [0, 1, 2, 3, 49_151, 49_152, 49_153, 200_000] {
            let mut out = Vec::new();
            encode_to(&mut out, &bytes[..len]).unwrap();
            assert_eq!(out, encode(&bytes[..len]).into_bytes(), "{len}");
        }
    }

    #[test]
    fn sloppy_input_is_refused() {
        assert_eq!(decode("Zg="), Err(Base64Error::Length(3)));
        assert!(decode("Zg==Zg==").is_err(), "padding in the middle");
        assert!(decode("Z===").is_err());
        assert!(decode("Zm9v\n").is_err());
        assert!(decode("Zm-v").is_err());
    }
}
