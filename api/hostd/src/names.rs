//! Ids, names, MACs and image references: what hostd turns into file, directory and
//! device names, checked so that none can name anything it should not.

use nova_http::FieldError;

/// Longest VM id, VM name, snapshot name or image name.
pub const MAX_ID_LEN: usize = 63;

/// Checks an id or name that becomes a file or directory name: 1 to 63 characters of
/// `[A-Za-z0-9._-]`, not starting with `.` or `-` (so never `.`, `..`, a path, or NUL).
pub fn validate_id(field: &str, s: &str) -> Result<(), FieldError> {
    if s.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(FieldError::new(
            field,
            format!("longer than {MAX_ID_LEN} characters"),
        ));
    }
    if s.starts_with('.') || s.starts_with('-') {
        return Err(FieldError::new(field, "must not start with '.' or '-'"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(FieldError::new(
            field,
            format!("character {c:?} not allowed (only A-Z a-z 0-9 . _ -)"),
        ));
    }
    Ok(())
}

/// Checks `aa:bb:cc:dd:ee:ff`: unicast, not all zero.
pub fn parse_mac(field: &str, s: &str) -> Result<[u8; 6], FieldError> {
    let bad = || {
        FieldError::new(
            field,
            format!("'{s}' is not a MAC address like 02:00:00:00:00:01"),
        )
    };
    let parts: Vec<_> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *m = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 {
        return Err(FieldError::new(field, "is a multicast address"));
    }
    if mac == [0; 6] {
        return Err(FieldError::new(field, "is all zero"));
    }
    Ok(mac)
}

/// An image reference: `sha256:<64 hex>` (already in the host's image cache) or an
/// absolute path on the host (imported into the cache when the VM is created).
pub fn validate_image_ref(field: &str, s: &str) -> Result<(), FieldError> {
    if let Some(hex) = s.strip_prefix("sha256:") {
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Ok(());
        }
        return Err(FieldError::new(
            field,
            "sha256: must be followed by 64 lowercase hex digits",
        ));
    }
    if s.starts_with('/') && !s.contains('\0') && s.len() <= 4096 {
        return Ok(());
    }
    Err(FieldError::new(
        field,
        "must be sha256:<hex> or an absolute path",
    ))
}
