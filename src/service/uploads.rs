//! The one place that assembles a drainer from the configuration, for the
//! daemon's drain thread and for `enrolld drain` without a daemon alike:
//! the retry policy, the pause checks, retention, each provider's rate limit
//! and a factory that builds its uploader (TLS roots, CA file and secret
//! read anew each time it is called).

use crate::clock::Clock;
use crate::cloud::http::HttpClient;
use crate::cloud::timefloor::TimeFloor;
use crate::cloud::{build_uploader, http_config, SkewClock, UploadError};
use crate::config::Config;
use crate::model::Provider;
use crate::model::{ErrorClass, UploadCode};
use crate::queue::drain::{Drainer, ProviderLimits, Retention};
use crate::queue::outbox::Outbox;
use crate::queue::retry::{PauseRecheck, RetryPolicy};
use std::sync::Arc;

/// A drainer for `config`, over `outbox`.
pub fn build_drainer(
    config: &Config,
    outbox: Arc<Outbox>,
    clock: Arc<dyn Clock>,
    skew: Arc<SkewClock>,
) -> Drainer {
    let u = &config.upload;
    let policy = RetryPolicy {
        base_ms: u.retry_base_ms as i64,
        max_ms: u.retry_max_ms as i64,
        ..RetryPolicy::default()
    };
    let recheck = PauseRecheck {
        min_ms: u.pause_recheck_min_ms as i64,
        max_ms: u.pause_recheck_max_ms as i64,
    };
    let mut drainer = Drainer::new(
        outbox,
        policy,
        clock.clone(),
        skew.clone(),
        Retention::from_config(config),
    )
    .with_recheck(recheck);
    // At start-up every provider shares one client (one set of roots);
    // a pause check builds its provider a client of its own, from the CA
    // file as it is then.
    let floor = Arc::new(crate::cloud::timefloor::TimeFloor::in_state_dir(
        &config.state_dir,
        clock.clone(),
    ));
    if let Some(w) = floor.warning() {
        log::warn!("{w}");
    }
    drainer.set_time_floor(floor.clone());
    let http = http_client(config, &floor);
    for provider in Provider::ALL {
        let qps = match provider {
            Provider::Jd => config.jd.qps,
            Provider::Tencent => config.tencent.qps,
        };
        let uploader = http
            .clone()
            .and_then(|http| build_uploader(config, provider, http, skew.clone()));
        drainer.set_uploader(provider, uploader, ProviderLimits { qps });
    }
    let config = config.clone();
    drainer.set_factory(Box::new(move |provider| {
        build_uploader(
            &config,
            provider,
            http_client(&config, &floor)?,
            skew.clone(),
        )
    }));
    drainer
}

/// The HTTPS client of `config` (roots, extra CA file, deadlines, proxy).
fn http_client(config: &Config, floor: &Arc<TimeFloor>) -> Result<Arc<HttpClient>, UploadError> {
    let http = crate::cloud::http::HttpConfig {
        time_floor: Some(floor.clone()),
        ..http_config(config)
    };
    HttpClient::new(&http)
        .map(Arc::new)
        .map_err(|e| UploadError::new(ErrorClass::Operator, UploadCode::TlsConfig, e.to_string()))
}
