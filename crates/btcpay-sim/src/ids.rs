//! Ids shaped like BTCPay's: 22 characters of base58, from the kernel's randomness.

const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// A fresh id.
pub fn new_id() -> String {
    let base = ALPHABET.len() as u128;
    let mut id = String::with_capacity(22);
    // Eleven base58 digits (64 bits) from each of two random UUIDs.
    for _ in 0..2 {
        let mut value = uuid::Uuid::new_v4().as_u128();
        for _ in 0..11 {
            let digit = usize::try_from(value % base).unwrap_or(0);
            value /= base;
            id.push(char::from(ALPHABET[digit]));
        }
    }
    id
}
