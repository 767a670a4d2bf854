//! The access records end to end over the in-memory store: publish checks, tokens,
//! Ed25519 keys, old records, and the view's versions.

use super::view::{PUBLISH_KEYS, SIGNING_KEYS};
use super::*;
use crate::store::memory::MemoryStore;
use crate::store::{Fence, Store as _};
use ferrocast_proto::controller::v1 as pb;
use ferrocast_tokens::Purpose;

#[tokio::test]
async fn publish_keys_and_tokens_are_checked_and_revocable() {
    let store = MemoryStore::new();
    let access = Access::new(PublishAuth::Closed);
    let fence = Fence::standalone();
    let admin = Admin {
        store: &store,
        fence: &fence,
        access: &access,
    };
    let check = |s: &str, c: &str| {
        let a = &access;
        let st = &store;
        let (s, c) = (s.to_owned(), c.to_owned());
        async move { a.check_publish(st, &s, &c).await }
    };
    let err = check("cam", "").await.unwrap_err();
    assert!(err.contains("no publish credential"), "{err}");

    let k = admin.create_publish_key("cam".into()).await.unwrap();
    let id = k.key.as_ref().unwrap().key_id.clone();
    assert!(k.secret.starts_with(&format!("{id}.")));
    check("cam", &format!("key={}", k.secret)).await.unwrap();
    // The store holds only the hash.
    let raw = store.records(PUBLISH_KEYS).await.unwrap();
    assert!(!String::from_utf8_lossy(&raw[0].1).contains(&k.secret));
    let err = check("other", &format!("key={}", k.secret))
        .await
        .unwrap_err();
    assert!(err.contains("not for this stream"), "{err}");
    let err = check("cam", &format!("key={id}.wrong")).await.unwrap_err();
    assert!(err.contains("wrong secret"), "{err}");

    let rotated = admin.rotate_publish_key(&id).await.unwrap();
    assert_eq!(rotated.key.unwrap().key_id, id);
    assert!(check("cam", &format!("key={}", k.secret)).await.is_err());
    check("cam", &format!("key={}", rotated.secret))
        .await
        .unwrap();
    admin.revoke_publish_key(&id).await.unwrap();
    assert!(check("cam", &format!("key={}", rotated.secret))
        .await
        .unwrap_err()
        .contains("unknown or revoked"));

    // Signed publish tokens.
    let play = admin.create_signing_key(hmac("play")).await.unwrap();
    let err = admin
        .issue_token(pb::IssueTokenRequest {
            purpose: "publish".into(),
            stream: "cam".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, AccessError::NotFound(_)));
    admin.create_signing_key(hmac("publish")).await.unwrap();
    let t = admin
        .issue_token(pb::IssueTokenRequest {
            purpose: "publish".into(),
            stream: "cam".into(),
            ttl_seconds: 60,
            ..Default::default()
        })
        .await
        .unwrap();
    check("cam", &format!("token={}", t.token)).await.unwrap();
    assert!(check("cam2", &format!("token={}", t.token)).await.is_err());
    // A playback token does not publish.
    let p = admin
        .issue_token(pb::IssueTokenRequest {
            purpose: "play".into(),
            stream: "cam".into(),
            key_id: play.key_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(check("cam", &format!("token={}", p.token)).await.is_err());
    // An expired one fails.
    let expired = tokens::sign(
        Purpose::Publish,
        &play.key_id,
        "cam",
        tokens::unix_now() - 10,
        &play.secret,
    );
    assert!(check("cam", &format!("token={expired}")).await.is_err());
    admin.revoke_token(&t.token).await.unwrap();
    assert!(check("cam", &format!("token={}", t.token))
        .await
        .unwrap_err()
        .contains("revoked"));

    // The edges' snapshot: play keys with secrets, no publish keys.
    admin
        .set_stream(pb::StreamAccess {
            stream: "cam".into(),
            token_required: true,
            blocked: false,
        })
        .await
        .unwrap();
    let snap = access.subscribe().borrow().edge_snapshot();
    assert_eq!(snap.play_keys.len(), 1);
    assert_eq!(snap.play_keys[0].secret, play.secret);
    assert_eq!(snap.streams.len(), 1);
    assert_eq!(snap.revoked.len(), 1);

    // Open mode lets anything through.
    let open = Access::new(PublishAuth::Open);
    open.check_publish(&store, "cam", "").await.unwrap();
}

#[tokio::test]
async fn ed25519_public_keys_are_registered_checked_and_pushed_without_secrets() {
    let store = MemoryStore::new();
    let access = Access::new(PublishAuth::Closed);
    let fence = Fence::standalone();
    let admin = Admin {
        store: &store,
        fence: &fence,
        access: &access,
    };
    let (signer, private_pem) = tokens::Ed25519Signer::generate().unwrap();
    let ed = |purpose: &str, id: &str, key: &[u8]| pb::CreateSigningKeyRequest {
        purpose: purpose.into(),
        algorithm: "ed25519".into(),
        public_key: key.to_vec(),
        key_id: id.into(),
    };
    // Malformed keys are refused at registration, and nothing is stored.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    for (bad, why) in [
        (&b"not a key"[..], "public key"),
        (&signer.public_key()[..31], "32 bytes"),
        (private_pem.as_bytes(), "private key"),
        (&weak[..], "weak"),
        (&b""[..], "needs its public key"),
    ] {
        let err = admin
            .create_signing_key(ed("play", "", bad))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AccessError::Invalid(m) if m.contains(why)),
            "{why}: {err}"
        );
    }
    let err = admin
        .create_signing_key(ed("play", "Bad_Id", &signer.public_key()))
        .await
        .unwrap_err();
    assert!(matches!(err, AccessError::Invalid(_)), "{err}");
    let err = admin
        .create_signing_key(pb::CreateSigningKeyRequest {
            public_key: signer.public_key().to_vec(),
            ..hmac("play")
        })
        .await
        .unwrap_err();
    assert!(matches!(err, AccessError::Invalid(_)), "{err}");
    assert!(store.records(SIGNING_KEYS).await.unwrap().is_empty());

    // Registered from PEM under the operator's id; a second key of that id is refused.
    let pem = signer.public_key_pem();
    let k = admin
        .create_signing_key(ed("play", "backend-1", pem.as_bytes()))
        .await
        .unwrap();
    assert_eq!(
        (k.key_id.as_str(), k.algorithm.as_str()),
        ("backend-1", "ed25519")
    );
    assert_eq!(k.public_key, signer.public_key());
    assert!(k.secret.is_empty());
    let err = admin
        .create_signing_key(ed("play", "backend-1", &signer.public_key()))
        .await
        .unwrap_err();
    assert!(matches!(err, AccessError::Exists(_)), "{err}");

    // The controller cannot sign with it; the newest HMAC key signs by default.
    let err = admin
        .issue_token(pb::IssueTokenRequest {
            purpose: "play".into(),
            stream: "cam".into(),
            key_id: "backend-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AccessError::Invalid(m) if m.contains("Ed25519")),
        "{err}"
    );
    assert!(matches!(
        admin
            .issue_token(pb::IssueTokenRequest {
                purpose: "play".into(),
                stream: "cam".into(),
                ..Default::default()
            })
            .await,
        Err(AccessError::NotFound(_))
    ));

    // Edges get the public key and the algorithm, listings too.
    let snap = access.subscribe().borrow().edge_snapshot();
    assert_eq!(snap.play_keys.len(), 1);
    assert_eq!(snap.play_keys[0].algorithm, "ed25519");
    assert_eq!(snap.play_keys[0].public_key, signer.public_key());
    let listed = list_signing_keys(&store).await.unwrap();
    assert_eq!(listed[0].public_key, signer.public_key());

    // Ed25519 publish tokens: right key ok, another key's, stream's or purpose's not.
    admin
        .create_signing_key(ed("publish", "pub-1", &signer.public_key()))
        .await
        .unwrap();
    let exp = tokens::unix_now() + 60;
    let good = signer.sign(Purpose::Publish, "pub-1", "cam", exp);
    access
        .check_publish(&store, "cam", &format!("token={good}"))
        .await
        .unwrap();
    let (other, _) = tokens::Ed25519Signer::generate().unwrap();
    for bad in [
        other.sign(Purpose::Publish, "pub-1", "cam", exp),
        signer.sign(Purpose::Publish, "pub-1", "dog", exp),
        signer.sign(Purpose::Play, "pub-1", "cam", exp),
        signer.sign(Purpose::Play, "backend-1", "cam", exp),
        signer.sign(Purpose::Publish, "pub-1", "cam", 10),
    ] {
        assert!(
            access
                .check_publish(&store, "cam", &format!("token={bad}"))
                .await
                .is_err(),
            "{bad}"
        );
    }
    admin.revoke_signing_key("pub-1").await.unwrap();
    let err = access
        .check_publish(&store, "cam", &format!("token={good}"))
        .await
        .unwrap_err();
    assert!(err.contains("unknown or revoked"), "{err}");
}

#[tokio::test]
async fn signing_key_records_from_before_ed25519_still_load() {
    let store = MemoryStore::new();
    let fence = Fence::standalone();
    let old = br#"{"purpose":"play","secret":"c2VjcmV0","created_unix":5}"#;
    store
        .set_record(SIGNING_KEYS, "old".into(), Some(old.to_vec()), fence)
        .await
        .unwrap();
    let view = AccessView::load(&store).await.unwrap();
    let snap = view.edge_snapshot();
    assert_eq!(snap.play_keys[0].secret, b"secret");
    assert_eq!(snap.play_keys[0].algorithm, "hmac-sha256");
}

#[tokio::test]
async fn a_replica_has_no_view_before_its_first_read_and_versions_each_change() {
    let store = MemoryStore::new();
    let fence = Fence::standalone();
    let access = Access::new(PublishAuth::Closed);
    // Not an empty view: no view at all, and WatchAccess would wait for one.
    assert!(!access.subscribe().borrow().is_loaded());
    assert!(!access.loaded(Duration::from_millis(50)).await);
    access.refresh(&store).await.unwrap();
    assert!(access.loaded(Duration::from_millis(50)).await);
    let first = access.subscribe().borrow().edge_snapshot();
    assert!(first.revision >= 1, "a loaded view is versioned");

    let admin = Admin {
        store: &store,
        fence: &fence,
        access: &access,
    };
    let key = admin.create_signing_key(hmac("play")).await.unwrap();
    let t = admin
        .issue_token(pb::IssueTokenRequest {
            purpose: "play".into(),
            stream: "cam".into(),
            ttl_seconds: 60,
            key_id: key.key_id.clone(),
        })
        .await
        .unwrap();
    admin.revoke_token(&t.token).await.unwrap();
    let revoked = access.subscribe().borrow().edge_snapshot();
    assert!(revoked.revision > first.revision);
    assert_eq!(revoked.revoked.len(), 1);

    // Writes elsewhere in the store move its revision but not the view's: nodes are
    // not sent the same rules again.
    let mut rx = access.subscribe();
    rx.mark_unchanged();
    store
        .share_loads(b"loads".to_vec(), fence.clone())
        .await
        .unwrap();
    let before = store.revision().await.unwrap();
    access.refresh(&store).await.unwrap();
    assert!(!rx.has_changed().unwrap());
    assert_eq!(
        access.subscribe().borrow().edge_snapshot().revision,
        revoked.revision
    );
    assert!(before > i64::try_from(revoked.revision).unwrap());
}

fn hmac(purpose: &str) -> pb::CreateSigningKeyRequest {
    pb::CreateSigningKeyRequest {
        purpose: purpose.into(),
        ..Default::default()
    }
}
