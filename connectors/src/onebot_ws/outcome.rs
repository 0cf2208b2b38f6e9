//! Reading an action response, the same `{status, retcode, data, message}` object in both
//! OneBot versions. The versions differ only in which `status` values mean success (v11
//! implementations answer `async` for queued actions) and in which message field they fill
//! first, so each version passes its own [`Dialect`].

use serde_json::Value;

/// The outcome of an action.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A `status` the version counts as success: the `data`.
    Ok(Value),
    /// `status` failed: retcode and the implementation's message.
    Failed {
        /// `retcode`, -1 when absent (so it never reads as success).
        retcode: i64,
        /// The first non-empty message field the dialect names.
        message: String,
    },
}

/// How one OneBot version words its responses.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    /// `status` values that mean the action was taken.
    pub ok_statuses: &'static [&'static str],
    /// Fields that may hold the failure text, most telling first.
    pub message_fields: &'static [&'static str],
}

/// Reads a response object; a missing `status` with `retcode` 0 counts as success, because
/// some implementations leave `status` out.
pub fn read(body: &Value, dialect: &Dialect) -> Outcome {
    let status = body.get("status").and_then(Value::as_str).unwrap_or("");
    let retcode = body.get("retcode").and_then(Value::as_i64).unwrap_or(-1);
    if dialect.ok_statuses.contains(&status) || (status.is_empty() && retcode == 0) {
        return Outcome::Ok(body.get("data").cloned().unwrap_or(Value::Null));
    }
    let message = dialect
        .message_fields
        .iter()
        .find_map(|key| {
            body.get(*key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("no message")
        .to_owned();
    Outcome::Failed { retcode, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_dialect_decides_what_success_is_and_which_message_tells_why() {
        let lenient = Dialect {
            ok_statuses: &["ok", "async"],
            message_fields: &["wording", "msg"],
        };
        let strict = Dialect {
            ok_statuses: &["ok"],
            message_fields: &["msg", "wording"],
        };
        let queued = json!({"status": "async", "retcode": 1, "msg": "m", "wording": "w"});
        assert_eq!(read(&queued, &lenient), Outcome::Ok(Value::Null));
        assert_eq!(
            read(&queued, &strict),
            Outcome::Failed {
                retcode: 1,
                message: "m".into()
            }
        );
        assert_eq!(
            read(&json!({"retcode": 0, "data": 7}), &strict),
            Outcome::Ok(json!(7))
        );
        assert_eq!(
            read(&json!({"status": "failed"}), &lenient),
            Outcome::Failed {
                retcode: -1,
                message: "no message".into()
            }
        );
    }
}
