//! Records (and tokens held for APIs) opened from the sealed bytes the tracked cache holds,
//! kept beside those bytes so the next call on the session derives no key and decrypts nothing
//! (see the security model, "Per-instance cache"). A kept value goes wherever its sealed bytes
//! go: it is dropped at their invalidation or eviction, and with the whole cache when that
//! empties itself.
//!
//! A kept record is handed only to a request whose cookie carries the browser secret it was
//! opened with: beside it lies a keyed hash of that secret, under a key of this instance alone,
//! never the secret itself.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::Sessions;
use super::store::Opened;

/// Makes and recognises kept records for one instance.
pub(super) struct OpenedRecords {
    /// HMAC-SHA256 keyed with 256 random bits drawn at start, its pads computed once.
    tagger: Hmac<Sha256>,
}

/// A value as opened, and who opened it.
struct OpenedRecord<T> {
    secret_tag: [u8; 32],
    value: Arc<T>,
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

    /// What to keep beside the sealed bytes `value` was opened from with `secret`.
    pub(super) fn keep<T: Send + Sync + 'static>(&self, secret: &[u8], value: Arc<T>) -> Opened {
        Arc::new(OpenedRecord {
            secret_tag: self.tag(secret),
            value,
        })
    }

    /// The kept value, if `opened` is a `T` and was opened with `secret`.
    pub(super) fn recognise<T: Send + Sync + 'static>(
        &self,
        opened: &Opened,
        secret: &[u8],
    ) -> Option<Arc<T>> {
        let kept = opened.downcast_ref::<OpenedRecord<T>>()?;
        bool::from(kept.secret_tag.ct_eq(&self.tag(secret))).then(|| kept.value.clone())
    }

    fn tag(&self, secret: &[u8]) -> [u8; 32] {
        let mut mac = self.tagger.clone();
        mac.update(secret);
        mac.finalize().into_bytes().into()
    }
}

impl Sessions {
    /// What `opened` (found beside the sealed bytes a read returned) holds for `secret`, if
    /// it is a `T` this instance kept and opened records are kept at all.
    pub(super) fn kept<T: Send + Sync + 'static>(
        &self,
        opened: Option<&Opened>,
        secret: &[u8],
    ) -> Option<Arc<T>> {
        self.opened_records.as_ref()?.recognise(opened?, secret)
    }

    /// Keeps `value`, just opened with `secret` from `sealed` (the bytes a read of `key`
    /// returned), beside those bytes in the tracked cache, when opened records are kept.
    pub(super) fn keep_opened<T: Send + Sync + 'static>(
        &self,
        key: &str,
        sealed: &Arc<[u8]>,
        secret: &[u8],
        value: Arc<T>,
    ) {
        if let Some(opened_records) = &self.opened_records {
            self.store
                .attach(key, sealed, opened_records.keep(secret, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionRecord;

    #[test]
    fn a_kept_record_is_handed_only_to_the_secret_it_was_opened_with() {
        let records = OpenedRecords::new();
        let record = Arc::new(SessionRecord::for_testing("alice", u64::MAX));
        let kept = records.keep(&[7; 32], record.clone());
        let found = records
            .recognise::<SessionRecord>(&kept, &[7; 32])
            .expect("the same secret");
        assert!(Arc::ptr_eq(&found, &record));
        let other_secret = records.recognise::<SessionRecord>(&kept, &[8; 32]);
        assert!(other_secret.is_none(), "another secret");
        let other_instance = OpenedRecords::new().recognise::<SessionRecord>(&kept, &[7; 32]);
        assert!(
            other_instance.is_none(),
            "another instance's (or run's) key"
        );
        let other_type = records.recognise::<String>(&kept, &[7; 32]);
        assert!(other_type.is_none(), "a kept value of another type");
    }
}
