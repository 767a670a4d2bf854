//! `ferrocast ctl keys | signing-keys | token | playback`: access control over the
//! controller's operator API (see docs/access.md).

use super::{print_json, table, Ctl};
use ferrocast_proto::controller::v1 as pb;
use ferrocast_runtime::access::base64url;
use serde_json::json;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// A new publish key for STREAM; its secret is printed once.
    Create {
        /// Stream key.
        stream: String,
    },
    /// Publish keys (of one stream, or all); never their secrets.
    List {
        /// Only this stream's.
        #[arg(long)]
        stream: Option<String>,
    },
    /// A new secret for key ID; the old one stops working at once.
    Rotate {
        /// Key id.
        id: String,
    },
    /// Delete key ID: publishers using it are refused from their next connection.
    Revoke {
        /// Key id.
        id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum SigningKeysCommand {
    /// A new signing key; its secret (base64url) is printed once.
    Create {
        /// What its tokens allow.
        #[arg(long, value_parser = ["publish", "play"])]
        purpose: String,
    },
    /// Signing keys, without secrets.
    List,
    /// Delete key ID: every token it signed stops working.
    Revoke {
        /// Key id.
        id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Sign a token for STREAM with the newest signing key of the purpose.
    Issue {
        /// Stream key.
        stream: String,
        /// What it allows.
        #[arg(long, value_parser = ["publish", "play"])]
        purpose: String,
        /// Lifetime: `3600`, `10m`, `1h` (default 1h).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: u64,
        /// Sign with this key instead.
        #[arg(long)]
        key_id: Option<String>,
    },
    /// Refuse TOKEN until it expires.
    Revoke {
        /// The token.
        token: String,
    },
}

/// `ctl playback STREAM --require-token | --block | --open`, or `ctl playback --list`.
#[derive(Debug, clap::Args)]
pub struct PlaybackArgs {
    /// Stream key (omit with --list).
    stream: Option<String>,
    /// Every playback request needs a valid playback token.
    #[arg(long, conflicts_with_all = ["block", "open", "list"])]
    require_token: bool,
    /// No playback at all.
    #[arg(long, conflicts_with_all = ["open", "list"])]
    block: bool,
    /// Back to the default (anyone may play).
    #[arg(long, conflicts_with = "list")]
    open: bool,
    /// Streams whose policy is not the default.
    #[arg(long)]
    list: bool,
}

fn parse_ttl(s: &str) -> Result<u64, String> {
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected e.g. 3600, 10m, 1h"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unit s, m, h or d")),
    };
    Ok(n * mult)
}

fn print_key(k: &pb::PublishKeySecret, json_out: bool) -> anyhow::Result<()> {
    let key = k.key.clone().unwrap_or_default();
    if json_out {
        print_json(&json!({"key_id": key.key_id, "stream": key.stream, "secret": k.secret}))
    } else {
        println!("key {} for stream {}", key.key_id, key.stream);
        println!("secret (shown once): {}", k.secret);
        println!(
            "publish to rtmp://HOST/live/{}?key={}",
            key.stream, k.secret
        );
        Ok(())
    }
}

pub async fn keys(ctl: &Ctl, c: KeysCommand, json_out: bool) -> anyhow::Result<()> {
    match c {
        KeysCommand::Create { stream } => {
            let req = pb::CreatePublishKeyRequest { stream };
            let k = ctl
                .write(req, |mut c, r| {
                    Box::pin(async move { c.create_publish_key(r).await })
                })
                .await?;
            print_key(&k, json_out)
        }
        KeysCommand::List { stream } => {
            let req = pb::ListPublishKeysRequest {
                stream: stream.unwrap_or_default(),
            };
            let r = ctl
                .read(req, |mut c, r| {
                    Box::pin(async move { c.list_publish_keys(r).await })
                })
                .await?;
            if json_out {
                let v: Vec<_> = r
                    .keys
                    .iter()
                    .map(|k| json!({"key_id": k.key_id, "stream": k.stream, "created_unix": k.created_unix}))
                    .collect();
                print_json(&v)
            } else {
                let rows: Vec<Vec<String>> = r
                    .keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.key_id.clone(),
                            k.stream.clone(),
                            k.created_unix.to_string(),
                        ]
                    })
                    .collect();
                table(&["KEY", "STREAM", "CREATED (UNIX)"], &rows);
                Ok(())
            }
        }
        KeysCommand::Rotate { id } => {
            let req = pb::KeyIdRequest { key_id: id };
            let k = ctl
                .write(req, |mut c, r| {
                    Box::pin(async move { c.rotate_publish_key(r).await })
                })
                .await?;
            print_key(&k, json_out)
        }
        KeysCommand::Revoke { id } => {
            let req = pb::KeyIdRequest { key_id: id.clone() };
            ctl.write(req, |mut c, r| {
                Box::pin(async move { c.revoke_publish_key(r).await })
            })
            .await?;
            done(
                json_out,
                json!({"revoked": id}),
                &format!("publish key {id} revoked"),
            )
        }
    }
}

fn done(json_out: bool, v: serde_json::Value, text: &str) -> anyhow::Result<()> {
    if json_out {
        print_json(&v)
    } else {
        println!("{text}");
        Ok(())
    }
}

pub async fn signing_keys(ctl: &Ctl, c: SigningKeysCommand, json_out: bool) -> anyhow::Result<()> {
    match c {
        SigningKeysCommand::Create { purpose } => {
            let req = pb::CreateSigningKeyRequest { purpose };
            let k = ctl
                .write(req, |mut c, r| {
                    Box::pin(async move { c.create_signing_key(r).await })
                })
                .await?;
            let secret = base64url(&k.secret);
            done(
                json_out,
                json!({"key_id": k.key_id, "purpose": k.purpose, "secret": secret}),
                &format!(
                    "{} signing key {}\nsecret (base64url, shown once): {secret}",
                    k.purpose, k.key_id
                ),
            )
        }
        SigningKeysCommand::List => {
            let r = ctl
                .read(pb::ListSigningKeysRequest {}, |mut c, r| {
                    Box::pin(async move { c.list_signing_keys(r).await })
                })
                .await?;
            if json_out {
                let v: Vec<_> = r
                    .keys
                    .iter()
                    .map(|k| json!({"key_id": k.key_id, "purpose": k.purpose, "created_unix": k.created_unix}))
                    .collect();
                print_json(&v)
            } else {
                let rows: Vec<Vec<String>> = r
                    .keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.key_id.clone(),
                            k.purpose.clone(),
                            k.created_unix.to_string(),
                        ]
                    })
                    .collect();
                table(&["KEY", "PURPOSE", "CREATED (UNIX)"], &rows);
                Ok(())
            }
        }
        SigningKeysCommand::Revoke { id } => {
            let req = pb::KeyIdRequest { key_id: id.clone() };
            ctl.write(req, |mut c, r| {
                Box::pin(async move { c.revoke_signing_key(r).await })
            })
            .await?;
            done(
                json_out,
                json!({"revoked": id}),
                &format!("signing key {id} revoked"),
            )
        }
    }
}

pub async fn token(ctl: &Ctl, c: TokenCommand, json_out: bool) -> anyhow::Result<()> {
    match c {
        TokenCommand::Issue {
            stream,
            purpose,
            ttl,
            key_id,
        } => {
            let req = pb::IssueTokenRequest {
                purpose,
                stream,
                ttl_seconds: ttl,
                key_id: key_id.unwrap_or_default(),
            };
            let r = ctl
                .write(req, |mut c, r| {
                    Box::pin(async move { c.issue_token(r).await })
                })
                .await?;
            done(
                json_out,
                json!({"token": r.token, "expiry_unix": r.expiry_unix}),
                &r.token,
            )
        }
        TokenCommand::Revoke { token } => {
            let req = pb::RevokeTokenRequest { token };
            ctl.write(req, |mut c, r| {
                Box::pin(async move { c.revoke_token(r).await })
            })
            .await?;
            done(json_out, json!({"revoked": true}), "token revoked")
        }
    }
}

pub async fn playback(ctl: &Ctl, a: PlaybackArgs, json_out: bool) -> anyhow::Result<()> {
    let view = |s: &pb::StreamAccess| json!({"stream": s.stream, "token_required": s.token_required, "blocked": s.blocked});
    if a.list {
        let r = ctl
            .read(pb::ListStreamAccessRequest {}, |mut c, r| {
                Box::pin(async move { c.list_stream_access(r).await })
            })
            .await?;
        if json_out {
            return print_json(&r.streams.iter().map(view).collect::<Vec<_>>());
        }
        let rows: Vec<Vec<String>> = r
            .streams
            .iter()
            .map(|s| {
                vec![
                    s.stream.clone(),
                    if s.blocked {
                        "blocked"
                    } else {
                        "token required"
                    }
                    .to_owned(),
                ]
            })
            .collect();
        table(&["STREAM", "PLAYBACK"], &rows);
        return Ok(());
    }
    let Some(stream) = a.stream else {
        anyhow::bail!("name a STREAM (or --list)");
    };
    if !(a.require_token || a.block || a.open) {
        anyhow::bail!("say --require-token, --block or --open");
    }
    let req = pb::StreamAccess {
        stream,
        token_required: a.require_token,
        blocked: a.block,
    };
    let s = ctl
        .write(req, |mut c, r| {
            Box::pin(async move { c.set_stream_access(r).await })
        })
        .await?;
    let what = if s.blocked {
        "blocked"
    } else if s.token_required {
        "needs a playback token"
    } else {
        "open"
    };
    done(
        json_out,
        view(&s),
        &format!("stream {}: playback {what}", s.stream),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ttls_parse() {
        assert_eq!(super::parse_ttl("90").unwrap(), 90);
        assert_eq!(super::parse_ttl("10m").unwrap(), 600);
        assert_eq!(super::parse_ttl("1h").unwrap(), 3600);
        assert!(super::parse_ttl("1y").is_err());
    }
}
