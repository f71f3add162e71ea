//! Records opened from the sealed bytes the tracked cache holds, kept beside those bytes so the
//! next call on the session derives no key and decrypts nothing (see the security model,
//! "Per-instance cache"). A kept record goes wherever its sealed bytes go: it is dropped at
//! their invalidation or eviction, and with the whole cache when that empties itself.
//!
//! A kept record is handed only to a request whose cookie carries the browser secret it was
//! opened with: beside it lies a keyed hash of that secret, under a key of this instance alone,
//! never the secret itself.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::record::SessionRecord;
use super::store::Opened;

/// Makes and recognises kept records for one instance.
pub(super) struct OpenedRecords {
    /// HMAC-SHA256 keyed with 256 random bits drawn at start, its pads computed once.
    tagger: Hmac<Sha256>,
}

/// A record as opened, and who opened it.
struct OpenedRecord {
    secret_tag: [u8; 32],
    record: Arc<SessionRecord>,
}

impl OpenedRecords {
    /// A fresh key: kept records mean nothing to another instance or a later run.
    pub(super) fn new() -> Self {
        let key: [u8; 32] = crate::random::bytes();
        Self {
            tagger: <Hmac<Sha256> as Mac>::new_from_slice(&key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length")),
        }
    }

    /// What to keep beside the sealed bytes `record` was opened from with `secret`.
    pub(super) fn keep(&self, secret: &[u8], record: Arc<SessionRecord>) -> Opened {
        Arc::new(OpenedRecord {
            secret_tag: self.tag(secret),
            record,
        })
    }

    /// The kept record, if `opened` is one and was opened with `secret`.
    pub(super) fn recognise(&self, opened: &Opened, secret: &[u8]) -> Option<Arc<SessionRecord>> {
        let kept = opened.downcast_ref::<OpenedRecord>()?;
        bool::from(kept.secret_tag.ct_eq(&self.tag(secret))).then(|| kept.record.clone())
    }

    fn tag(&self, secret: &[u8]) -> [u8; 32] {
        let mut mac = self.tagger.clone();
        mac.update(secret);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_record_is_handed_only_to_the_secret_it_was_opened_with() {
        let records = OpenedRecords::new();
        let record = Arc::new(SessionRecord::for_testing("alice", u64::MAX));
        let kept = records.keep(&[7; 32], record.clone());
        let found = records.recognise(&kept, &[7; 32]).expect("the same secret");
        assert!(Arc::ptr_eq(&found, &record));
        assert!(
            records.recognise(&kept, &[8; 32]).is_none(),
            "another secret"
        );
        assert!(
            OpenedRecords::new().recognise(&kept, &[7; 32]).is_none(),
            "another instance's (or run's) key"
        );
        let not_a_record: Opened = Arc::new(0_u8);
        assert!(records.recognise(&not_a_record, &[7; 32]).is_none());
    }
}
