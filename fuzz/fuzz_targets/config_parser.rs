//! Fuzz target: a config file's text through the same reading, interpolation and validation
//! as `qunbridge check` (`Config::from_toml`, the in-memory twin of `Config::from_file`), with
//! a small fixed environment. A config that validates then goes through what `check` prints:
//! account descriptions, the routes of its links and each destination's filter rules.

#![no_main]

use std::collections::HashMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use qunbridge::config::Config;
use qunbridge::core::Routes;

fuzz_target!(|data: &[u8]| {
    // A config file that is not UTF-8 is refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The variables the example configs in deploy/examples use, and an empty one.
    let env: HashMap<&str, &str> = [
        ("API_TOKEN", "api-s3cret"),
        ("DING_HOOK_SECRET", "SECc0ffee"),
        ("DING_HOOK_TOKEN", "hook-token"),
        ("DING_SECRET", "ding-s3cret"),
        ("QQ_TOKEN", "qq-s3cret"),
        ("QUNBRIDGE_API_TOKEN", "api-s3cret"),
        ("WECOM_KEY", "wecom-key"),
        ("WX_TOKEN", "wx-s3cret"),
        ("STATE_DIRECTORY", "/var/lib/qunbridge"),
        ("EMPTY", ""),
    ]
    .into();
    // Relative `<key>_file` paths resolve under a directory that does not exist.
    if let Ok(config) = Config::from_toml(text, Path::new("/nonexistent/qunbridge-fuzz"), &env) {
        for account in config.accounts.values() {
            let _ = account.connector.describe();
        }
        let routes = Routes::new(&config);
        for (origin, destinations) in routes.all() {
            let _ = origin.to_string();
            for destination in destinations {
                for rule in &destination.filter.rules {
                    let _ = rule.to_string();
                }
            }
        }
    }
});
