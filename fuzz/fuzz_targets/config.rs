//! Config file text, as the CLI reads a `--config` file: any content loads or is refused with
//! an error that names the file (and, for content, a line and column); what loads yields
//! the balancer's options and locations without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quaestor_core::config::{ConfigError, QuaestorConfig};

fuzz_target!(|data: &[u8]| {
    match QuaestorConfig::from_bytes(data, "fuzz/quaestor.config.yml") {
        Ok(config) => {
            let _ = format!("{config:?}");
            for agent in &config.agents {
                let _ = agent.is_key_value_store() || agent.is_worker();
            }
            if let Some(balancer) = &config.load_balancer {
                let _ = balancer.balancer_options(&config);
                let _ = balancer.lb_policies(&config);
                let _ = balancer.server_tls(&config);
            }
            let _ = config.worker_locations();
            let _ = config.etcd_options();
        }
        Err(error) => {
            let text = error.to_string();
            assert!(
                text.contains("fuzz/quaestor.config.yml"),
                "an error that does not name the file: {text}"
            );
            if let ConfigError::Invalid { .. } = error {
                let pos = error.pos().expect("an invalid file has a position");
                assert!(pos.line >= 1 && pos.column >= 1, "{text}");
            }
        }
    }
});
