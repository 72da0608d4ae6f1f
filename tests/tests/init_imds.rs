//! nova-init's EC2 instance metadata client (`nova.config=imds`, `nova.imds_url=`)
//! against a real metadata server: moto_server, which serves the IMDSv2 session
//! token (`PUT /latest/api/token`) and `/latest/meta-data/`, but (moto 5.2) not
//! `/latest/user-data`. So this shows the token exchange working and a missing
//! user-data named as such; reading user-data into the configuration is the
//! controller's own parser (`HostUserData::parse`, fuzzed) and
//! `Config::apply_user_data` (unit-tested in init/src/config.rs).

use std::time::{Duration, Instant};

use nova_init::imds::{user_data, ImdsError};
use nova_tests::free_port;
use nova_tests::moto::Moto;

#[test]
fn imds_v2_token_is_fetched_and_a_missing_user_data_is_named() {
    let Some(moto) = Moto::start() else { return };
    match user_data(&moto.url, Duration::from_secs(10)) {
        // The token PUT was answered (else the error would name it); the user-data
        // GET, with the token, is what moto does not serve.
        Err(ImdsError::Status { what, status, .. }) => {
            assert_eq!((what, status), ("GET /latest/user-data", 404))
        }
        other => panic!("expected moto to lack user-data: {other:?}"),
    }
}

#[test]
fn an_unreachable_metadata_service_is_asked_until_the_deadline_then_named() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let t = Instant::now();
    let e = user_data(&url, Duration::from_secs(3)).unwrap_err();
    assert!(matches!(e, ImdsError::Unreachable(..)), "{e}");
    assert!(e.to_string().starts_with(&url), "{e}");
    assert!(
        t.elapsed() >= Duration::from_secs(3),
        "asked again until the deadline"
    );
}
