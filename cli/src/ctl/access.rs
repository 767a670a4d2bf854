//! `ferrocast ctl keys | signing-keys | token | playback`: access control over the
//! controller's operator API (see docs/access.md), and `token keygen | sign`, which
//! work locally with an Ed25519 private key the controller never sees.

use super::{print_json, table, Ctl};
use anyhow::Context;
use ferrocast_proto::controller::v1 as pb;
use ferrocast_tokens::{self as tokens, base64url, Ed25519Signer, Purpose};
use serde_json::json;
use std::path::{Path, PathBuf};

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
    /// A new signing key: an HMAC secret made by the controller (printed once, base64url),
    /// or, with --public-key, an Ed25519 public key whose private key signs elsewhere.
    Create {
        /// What its tokens allow.
        #[arg(long, value_parser = ["publish", "play"])]
        purpose: String,
        /// Register this Ed25519 public key (PEM file, e.g. from `ferrocast ctl token
        /// keygen` or `openssl pkey -pubout`) instead of making an HMAC secret.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// The key id its tokens carry (1 to 32 of a-z 0-9 -; default: a random one).
        #[arg(long)]
        key_id: Option<String>,
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
    /// Sign a token locally with an Ed25519 private key (no controller needed): what a
    /// platform's backend does with the key registered by `signing-keys create
    /// --public-key`.
    Sign {
        /// Stream key.
        stream: String,
        /// What it allows.
        #[arg(long, value_parser = ["publish", "play"])]
        purpose: String,
        /// Lifetime: `3600`, `10m`, `1h` (default 1h).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: u64,
        /// The id the public key was registered under.
        #[arg(long)]
        key_id: String,
        /// The private key: unencrypted PKCS#8 PEM (`token keygen`, or `openssl genpkey
        /// -algorithm ed25519`).
        #[arg(long, value_name = "FILE")]
        ed25519_key: PathBuf,
    },
    /// Make an Ed25519 key pair: the private key in FILE (mode 0600, PKCS#8 PEM), the
    /// public key beside it in FILE with `.pub.pem` (what `signing-keys create
    /// --public-key` registers).
    Keygen {
        /// Where the private key goes (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

impl TokenCommand {
    /// Whether it runs without a controller.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            TokenCommand::Sign { .. } | TokenCommand::Keygen { .. }
        )
    }
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
        SigningKeysCommand::Create {
            purpose,
            public_key,
            key_id,
        } => {
            let (algorithm, public_key) = match public_key {
                Some(path) => (
                    "ed25519".to_owned(),
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                ),
                None => (String::new(), Vec::new()),
            };
            let req = pb::CreateSigningKeyRequest {
                purpose,
                algorithm,
                public_key,
                key_id: key_id.unwrap_or_default(),
            };
            let k = ctl
                .write(req, |mut c, r| {
                    Box::pin(async move { c.create_signing_key(r).await })
                })
                .await?;
            if k.algorithm == "ed25519" {
                let public = base64url(&k.public_key);
                return done(
                    json_out,
                    json!({"key_id": k.key_id, "purpose": k.purpose, "algorithm": k.algorithm, "public_key": public}),
                    &format!(
                        "{} signing key {} (ed25519, public key {public})\nsign tokens with its private key: ferrocast ctl token sign STREAM --purpose {} --key-id {} --ed25519-key FILE",
                        k.purpose, k.key_id, k.purpose, k.key_id
                    ),
                );
            }
            let secret = base64url(&k.secret);
            done(
                json_out,
                json!({"key_id": k.key_id, "purpose": k.purpose, "algorithm": k.algorithm, "secret": secret}),
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
                    .map(|k| {
                        let mut v = json!({"key_id": k.key_id, "purpose": k.purpose, "algorithm": k.algorithm, "created_unix": k.created_unix});
                        if !k.public_key.is_empty() {
                            v["public_key"] = base64url(&k.public_key).into();
                        }
                        v
                    })
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
                            k.algorithm.clone(),
                            k.created_unix.to_string(),
                        ]
                    })
                    .collect();
                table(&["KEY", "PURPOSE", "ALGORITHM", "CREATED (UNIX)"], &rows);
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
        TokenCommand::Sign { .. } | TokenCommand::Keygen { .. } => token_local(c, json_out),
    }
}

/// `token sign` and `token keygen`: local, no controller.
pub fn token_local(c: TokenCommand, json_out: bool) -> anyhow::Result<()> {
    match c {
        TokenCommand::Sign {
            stream,
            purpose,
            ttl,
            key_id,
            ed25519_key,
        } => {
            let purpose = Purpose::parse(&purpose).context("purpose: publish or play")?;
            anyhow::ensure!(
                tokens::valid_key_id(&key_id),
                "invalid key id {key_id:?}: 1 to 32 of a-z 0-9 -"
            );
            anyhow::ensure!(
                ferrocast_media::hls::names::valid_stream_key(&stream),
                "invalid stream {stream:?}"
            );
            let pem = std::fs::read_to_string(&ed25519_key)
                .with_context(|| format!("reading {}", ed25519_key.display()))?;
            let signer = Ed25519Signer::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("{}: {e}", ed25519_key.display()))?;
            let expiry = tokens::unix_now().saturating_add(ttl);
            let token = signer.sign(purpose, &key_id, &stream, expiry);
            done(
                json_out,
                json!({"token": token, "expiry_unix": expiry}),
                &token,
            )
        }
        TokenCommand::Keygen { out } => {
            let public_path = public_path(&out);
            let (signer, private_pem) =
                Ed25519Signer::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
            write_new(&out, private_pem.as_bytes(), 0o600)?;
            write_new(&public_path, signer.public_key_pem().as_bytes(), 0o644)?;
            let public = base64url(&signer.public_key());
            done(
                json_out,
                json!({"private_key_file": out, "public_key_file": public_path, "public_key": public}),
                &format!(
                    "private key: {} (keep it with the signer)\npublic key: {} ({public})\nregister it: ferrocast ctl signing-keys create --purpose play --public-key {} --key-id ID",
                    out.display(),
                    public_path.display(),
                    public_path.display()
                ),
            )
        }
        other => anyhow::bail!("{other:?} needs the controller"),
    }
}

/// `key.pem` → `key.pub.pem`; `key` → `key.pub.pem`.
fn public_path(private: &Path) -> PathBuf {
    let s = private.to_string_lossy();
    PathBuf::from(format!("{}.pub.pem", s.strip_suffix(".pem").unwrap_or(&s)))
}

/// Creates `path` with `mode`; an existing file is an error, never overwritten.
fn write_new(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", path.display()))
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

    #[test]
    fn public_key_files_sit_beside_the_private_key() {
        use std::path::Path;
        assert_eq!(
            super::public_path(Path::new("/k/key.pem")),
            Path::new("/k/key.pub.pem")
        );
        assert_eq!(
            super::public_path(Path::new("key")),
            Path::new("key.pub.pem")
        );
    }
}
