//! Token parsing and verification: any text is refused cleanly, and bytes
//! changed anywhere in a real token never verify as a token with other
//! claims (the signatures cover everything the server reads).

#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use tessera::authz::keys::RootKeys;
use tessera::authz::tokens;

struct Fixture {
    keys: RootKeys,
    token: Vec<u8>,
    claims: tokens::Claims,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys = RootKeys::ephemeral();
        let token = tokens::mint_delegated(&keys, "user-1", "deleg-1", "helper", 1, i64::MAX / 2)
            .expect("minting the fixture token");
        let claims = tokens::verify(&keys, &token).expect("fixture verifies").claims;
        let token = URL_SAFE.decode(&token).expect("fixture is base64");
        Fixture { keys, token, claims }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    // As text: whatever it is, an answer and no panic.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tokens::verify(&f.keys, text);
    }
    // As edits of a real token: (position, byte) pairs.
    let mut edited = f.token.clone();
    for pair in data.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % edited.len();
        edited[at] ^= pair[2];
    }
    if let Ok(verified) = tokens::verify(&f.keys, &URL_SAFE.encode(&edited)) {
        assert_eq!(verified.claims, f.claims, "an edited token verified with other claims");
    }
});
