//! Labels: the host carries every label the VM asks of its host.

use crate::scheduler::{HostView, Request};

pub fn labels(req: &Request, h: &HostView) -> Result<(), &'static str> {
    if req
        .host_labels
        .iter()
        .all(|(k, v)| h.labels.get(k) == Some(v))
    {
        Ok(())
    } else {
        Err("labels")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::fixture::*;

    #[test]
    fn a_host_must_carry_every_requested_label_with_its_value() {
        let mut r = req(1, 64);
        r.host_labels.insert("zone".into(), "a".into());
        let mut h = host("h", 1, 64);
        assert_eq!(labels(&r, &h), Err("labels"));
        h.labels.insert("zone".into(), "b".into());
        assert_eq!(labels(&r, &h), Err("labels"));
        h.labels.insert("zone".into(), "a".into());
        h.labels.insert("ssd".into(), "yes".into());
        assert!(labels(&r, &h).is_ok());
    }
}
