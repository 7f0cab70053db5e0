//! What the client tells its user when something fails: the cause, read from the whole error
//! chain or from the token itself, and what to do about it.

use std::error::Error as _;

use super::ClientError;

/// What went wrong at the network level, naming `addr` (never a path: a download URL is a
/// credential) and the root cause from the error's source chain.
pub fn network(e: reqwest::Error, addr: &str) -> String {
    let e = e.without_url();
    let mut chain = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        chain.push(s);
        source = s.source();
    }
    let io = chain
        .iter()
        .find_map(|s| s.downcast_ref::<std::io::Error>());
    let root = chain
        .last()
        .map_or_else(|| e.to_string(), ToString::to_string);
    if io.is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
        format!("nothing accepts connections at {addr} ({root})")
    } else if chain.iter().any(|s| s.to_string() == "dns error") {
        format!("cannot find the address of {addr} ({root})")
    } else if e.is_timeout() {
        format!("{addr} did not answer in time ({root})")
    } else if e.is_connect() {
        format!("cannot connect to {addr} ({root})")
    } else {
        format!("the connection to {addr} failed ({root})")
    }
}

/// The service's refusal, made to say what to do: `token` is the one that was sent, `size` the
/// file's when uploading.
pub fn refusal(e: ClientError, token: &str, size: Option<u64>) -> ClientError {
    let ClientError::Refused {
        status,
        message,
        advice,
    } = e
    else {
        return e;
    };
    let advice = match status {
        401 => token_advice(token, chrono::Utc::now().timestamp()),
        403 => "the token does not allow this: a participant's token acts only on --user self; \
                a worker's or researcher's token must be of the participant's app"
            .to_owned(),
        404 => "check the file ID and --user".to_owned(),
        413 => size_advice(&message, size),
        415 => "the service does not take files of this type (its PF_ALLOWED_TYPES); give \
                another --mime-type only if the file really is of that type"
            .to_owned(),
        410 => {
            "the upload expired at the service; run the same command again to start over".to_owned()
        }
        422 => "the service's scanner found the file infected; it was not stored".to_owned(),
        429 => "wait a while, then run the same command again".to_owned(),
        460 => "the file's bytes changed while they were read: run the same command again once \
                nothing writes to it"
            .to_owned(),
        _ => advice,
    };
    ClientError::Refused {
        status,
        message,
        advice,
    }
}

/// Why a token was refused, from what it says about itself: its `exp`, read without checking
/// its signature (only the service can check that).
fn token_advice(token: &str, now: i64) -> String {
    const GET_ONE: &str = "get a new token (from the study's sign-in, or `participant-files \
                           token` run with the service's PF_JWT_SECRET or data folder) and pass \
                           it with --token or PF_TOKEN, then run the same command again";
    let Ok(claims) = jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(token)
    else {
        return format!("the token is not a JWT (three base64url parts); {GET_ONE}");
    };
    match claims.get("exp").and_then(serde_json::Value::as_i64) {
        Some(exp) if exp <= now => format!(
            "the token expired at {} ({} ago); {GET_ONE}",
            when(exp),
            humantime::format_duration(std::time::Duration::from_secs(
                u64::try_from(now - exp).unwrap_or(0)
            ))
        ),
        Some(exp) => format!(
            "the token is valid until {}, so the service does not trust its signer: it was \
             signed with another secret or key than the service's, or for another app; {GET_ONE}",
            when(exp)
        ),
        None => format!("the token has no expiry (exp); {GET_ONE}"),
    }
}

fn when(exp: i64) -> String {
    chrono::DateTime::from_timestamp(exp, 0).map_or_else(
        || exp.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// A 413: the limit in human units, from Bridge's message ("… the limit of N bytes.").
fn size_advice(message: &str, size: Option<u64>) -> String {
    let human = |b: u64| bytesize::ByteSize::b(b).display().iec().to_string();
    let limit = message
        .split_once("limit of ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    match (limit, size) {
        (Some(limit), Some(size)) => format!(
            "the file is {}, and the service takes files of at most {} (its PF_MAX_FILE_SIZE \
             sets that); ask its operator to raise it, or send a smaller file",
            human(size),
            human(limit)
        ),
        (Some(limit), None) => format!(
            "the service takes files of at most {} (its PF_MAX_FILE_SIZE sets that)",
            human(limit)
        ),
        // A quota, not the file size limit.
        _ => "delete some of the participant's files first, or ask the service's operator for \
              a larger quota"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_expiry_is_read_from_its_claims() {
        let claims = serde_json::json!({"sub": "u", "exp": 1_000});
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"any"),
        )
        .unwrap();
        let said = token_advice(&token, 4_600);
        assert!(
            said.contains("expired at 1970-01-01 00:16:40 UTC (1h ago)"),
            "{said}"
        );
        assert!(token_advice(&token, 999).contains("valid until"));
        assert!(token_advice("garbage", 0).contains("not a JWT"));
    }

    #[test]
    fn a_413_says_the_limit_in_human_units() {
        let said = size_advice(
            "File is larger than the limit of 1048576 bytes.",
            Some(3 << 20),
        );
        assert!(
            said.contains("3.0 MiB") && said.contains("1.0 MiB"),
            "{said}"
        );
        assert!(said.contains("PF_MAX_FILE_SIZE"), "{said}");
    }
}
