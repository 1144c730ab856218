//! The engine's one hook for object-store locations: what a run wrote in a store's mirror is
//! published to the bucket before the archive records it (see `crate::objstore`).

use super::write::GroupOutcome;
use super::*;
use crate::objstore::Published;

impl Engine {
    /// After a location's writes for `file`: in an object store they count only once
    /// published; a write that lost the race to another machine is left for the next run.
    pub(super) fn published(
        &self,
        place: &Place,
        file: &str,
        outcome: GroupOutcome,
        changes: &mut Changes,
    ) -> GroupOutcome {
        if !matches!(outcome, GroupOutcome::Written) || place.loc.store.is_none() {
            return outcome;
        }
        let name = &place.loc.name;
        let outcome = match self.stores.publish(name, file) {
            None | Some(Published::Done) => return outcome,
            Some(Published::Raced(why)) => GroupOutcome::Raced(Error::Refused(why)),
            Some(Published::Failed(why)) => GroupOutcome::Failed(Error::Refused(why)),
        };
        // A marker this run made but could not publish is not this location's identity.
        if !self.stores.marker_published(name) {
            changes.location_ids.retain(|(n, _)| n != name);
        }
        outcome
    }
}

impl Engine {
    /// Publishes a marker just written in an object store's mirror (a relink).
    pub(super) fn publish_marker(&self, name: &str) -> Result<()> {
        match self.stores.publish(name, crate::names::MARKER) {
            None | Some(Published::Done) => Ok(()),
            Some(Published::Raced(why) | Published::Failed(why)) => Err(Error::Refused(format!(
                "{name} cannot be relinked now: {why}"
            ))),
        }
    }
}

impl Engine {
    /// Before a stored version of an object store is rebuilt: the packs it needs that the
    /// mirror's store does not hold are fetched from the bucket (none for a folder).
    pub(super) fn fetch_stored_packs(
        &self,
        place: &Place,
        m: &crate::history::store::Manifest,
    ) -> Result<()> {
        if place.loc.store.is_none() {
            return Ok(());
        }
        self.stores
            .fetch_packs(&place.loc.name, &m.packs)
            .map_err(|e| {
                Error::Refused(format!(
                    "cannot read the stored version {} from {}: {e}",
                    m.info.name, place.loc.name
                ))
            })
    }

    /// Where a version found in `place` is put back: there, or the local folder when
    /// `place` is an object store (its folder is only a mirror; the next sync carries the
    /// restored version everywhere).
    pub(super) fn restore_place(&self, place: Place) -> Result<Place> {
        if place.loc.store.is_none() {
            return Ok(place);
        }
        self.available_places()?
            .0
            .into_iter()
            .find(|p| p.loc.is_local())
            .ok_or_else(|| Error::Refused("the local folder is not available".into()))
    }
}
