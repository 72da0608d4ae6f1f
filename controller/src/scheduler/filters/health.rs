//! Health: only Ready, uncordoned hosts that the request does not exclude.

use crate::scheduler::{HostView, Request};

pub fn health(req: &Request, h: &HostView) -> Result<(), &'static str> {
    if !h.ready {
        return Err("down");
    }
    if h.cordoned {
        return Err("cordoned");
    }
    if req.exclude.contains(&h.id) {
        return Err("excluded");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::fixture::*;

    #[test]
    fn down_cordoned_and_excluded_hosts_are_refused() {
        let r = req(1, 64);
        assert!(health(&r, &host("a", 1, 64)).is_ok());
        let mut h = host("a", 1, 64);
        h.ready = false;
        assert_eq!(health(&r, &h), Err("down"));
        let mut h = host("a", 1, 64);
        h.cordoned = true;
        assert_eq!(health(&r, &h), Err("cordoned"));
        let mut r2 = req(1, 64);
        r2.exclude = vec!["a".into()];
        assert_eq!(health(&r2, &host("a", 1, 64)), Err("excluded"));
    }
}
