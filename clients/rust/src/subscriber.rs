//! The subscriber's side of simulcast, as pure state: the settings it asked for per track
//! (kept until the track goes away, re-sent when a subscription is (re)established, since the
//! server forgets them with the subscription) and what the server says it forwards.

use std::collections::{HashMap, HashSet};

use prism_proto::signal::{StreamStateUpdate, UpdateTrackSettings};
use tokio::sync::watch;

use crate::layers::{SettingsChange, StreamState, TrackSettings};

#[derive(Debug, Default)]
pub(crate) struct SubscriberBook {
    settings: HashMap<String, TrackSettings>,
    /// Tracks the server reported subscribed (it accepts settings only for those).
    subscribed: HashSet<String>,
    stream_states: HashMap<String, watch::Sender<Option<StreamState>>>,
}

impl SubscriberBook {
    pub(crate) fn settings(&self, track_sid: &str) -> TrackSettings {
        self.settings.get(track_sid).copied().unwrap_or_default()
    }

    /// Records a change; returns the message to send now, if the track is subscribed.
    pub(crate) fn change(
        &mut self,
        track_sid: &str,
        change: SettingsChange,
    ) -> Option<UpdateTrackSettings> {
        let next = change.apply(self.settings(track_sid));
        self.settings.insert(track_sid.to_owned(), next);
        self.subscribed
            .contains(track_sid)
            .then(|| next.to_proto(track_sid))
    }

    /// The server reports the subscription established (or ended). Settings chosen before it
    /// existed, or kept from an earlier one, go out now.
    pub(crate) fn on_subscription(
        &mut self,
        track_sid: &str,
        subscribed: bool,
    ) -> Option<UpdateTrackSettings> {
        if !subscribed {
            self.subscribed.remove(track_sid);
            self.stream_states.remove(track_sid);
            return None;
        }
        self.subscribed.insert(track_sid.to_owned());
        let settings = self.settings(track_sid);
        (settings != TrackSettings::default()).then(|| settings.to_proto(track_sid))
    }

    /// The track is gone (unpublished, or its publisher left).
    pub(crate) fn forget(&mut self, track_sid: &str) {
        self.settings.remove(track_sid);
        self.subscribed.remove(track_sid);
        self.stream_states.remove(track_sid);
    }

    /// Where a remote track reads its stream state from.
    pub(crate) fn watch_stream_state(
        &mut self,
        track_sid: &str,
    ) -> watch::Receiver<Option<StreamState>> {
        self.stream_states
            .entry(track_sid.to_owned())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    pub(crate) fn on_stream_state(&mut self, update: &StreamStateUpdate) -> StreamState {
        let state = StreamState::from(update);
        self.stream_states
            .entry(update.track_sid.clone())
            .or_insert_with(|| watch::channel(None).0)
            .send_replace(Some(state.clone()));
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_proto::signal::{VideoQuality, stream_state_update};

    #[test]
    fn settings_wait_for_the_subscription_and_survive_a_resubscribe() {
        let mut book = SubscriberBook::default();
        assert!(
            book.change("T", SettingsChange::Quality(VideoQuality::Low))
                .is_none(),
            "not subscribed yet: kept, not sent"
        );
        let sent = book.on_subscription("T", true).expect("sent on subscribe");
        assert_eq!(sent.quality(), VideoQuality::Low);
        let sent = book
            .change("T", SettingsChange::Paused(true))
            .expect("subscribed: sent at once");
        assert!(sent.paused);
        assert_eq!(sent.quality(), VideoQuality::Low, "other settings kept");
        assert!(book.on_subscription("T", false).is_none());
        let again = book.on_subscription("T", true).expect("re-sent");
        assert!(again.paused);
        book.forget("T");
        assert_eq!(book.settings("T"), TrackSettings::default());
        assert!(
            book.on_subscription("T", true).is_none(),
            "defaults are not sent"
        );
    }

    #[test]
    fn stream_state_reaches_watchers_made_before_and_after() {
        let mut book = SubscriberBook::default();
        let early = book.watch_stream_state("T");
        let update = StreamStateUpdate {
            track_sid: "T".into(),
            reason: 0,
            state: stream_state_update::State::Active as i32,
            rid: "f".into(),
            quality: VideoQuality::High as i32,
            width: 1280,
            height: 720,
        };
        let state = book.on_stream_state(&update);
        assert_eq!(early.borrow().as_ref(), Some(&state));
        assert_eq!(book.watch_stream_state("T").borrow().as_ref(), Some(&state));
        book.on_subscription("T", false);
        assert!(book.watch_stream_state("T").borrow().is_none());
    }
}
