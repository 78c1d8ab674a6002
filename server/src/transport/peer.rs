//! Building the server side of a participant's peer connection: ICE-lite, our codecs and header
//! extensions, the default interceptors, and host candidates for the worker's advertised
//! addresses. The engine picks the ICE credentials (new ones on every ICE restart, RFC 8445
//! section 9); the worker reads the ufrag from each local description it applies, since the
//! ufrag routes STUN on the shared socket.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::ice::mdns::MulticastDnsMode;
use std::sync::Arc;

use rtc::interceptor::{
    CongestionControlBuilder, NackGeneratorBuilder, ReceiverReportBuilder, Registry, Slot,
    TwccSenderBuilder,
};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate,
};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpHeaderExtensionCapability, RtpCodecKind};

use super::WorkerStats;
use super::interceptors::{
    CountingNackResponder, FEEDBACK_TAP_SLOT, ReadTap, mark_for_application,
};
use crate::bwe::estimator::SendSideBwe;
use crate::bwe::feedback_scope::{FEEDBACK_SCOPE_SLOT, note_feedback_starts};
use crate::bwe::link::{LinkState, SharedEstimator, SharedLink};
use crate::bwe::pacer::PacedSender;
use crate::config::BweConfig;

/// Header extensions Prism negotiates besides the ones the default interceptors add
/// (transport-cc, mid, rid, repaired-rid).
const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";

/// Settings shared by every connection of a worker.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    pub advertised: Vec<SocketAddr>,
    pub ice_disconnected_timeout: Duration,
    pub ice_failed_timeout: Duration,
    pub bwe: BweConfig,
}

/// The interceptor chain of a Prism connection. Like the engine's defaults (NACK generator
/// toward publishers, receiver reports, transport-wide CC feedback to publishers) except: NACKs
/// from subscribers are answered by our counting responder, sender reports are ours (they carry
/// the publisher's clock through the timestamp rewriting, see `media::reports`), and the
/// feedback the worker acts on is tapped for the application. With downlink congestion control
/// on (`bwe.enabled`), outgoing RTP also carries transport-wide sequence numbers, the feedback
/// on them drives our estimator, and a pacer meters what leaves (see `crate::bwe`).
fn interceptors(
    media_engine: &mut MediaEngine,
    stats: &Arc<WorkerStats>,
    link: Option<&SharedLink>,
) -> Result<Registry, rtc::shared::error::Error> {
    // Registers the nack / nack pli feedback; the interceptors it adds are replaced below.
    let _ = configure_nack(Registry::new(), media_engine);
    configure_simulcast_extension_headers(media_engine)?;
    let registry = Registry::new()
        .with(
            Slot::NackResponder,
            CountingNackResponder::new(stats.clone()),
        )
        // At most 3 NACKs per lost packet: the engine unwraps a publisher's RTX only after
        // the interceptor chain, so the generator never sees a retransmission arrive and would
        // NACK each loss every 100 ms until it leaves its history (the virtual-time sim saw a
        // publisher at 3% uplink loss send 6,924 datagrams instead of ~3,200; 3,187 with this).
        .with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_max_nacks_per_packet(3)
                .build(),
        )
        .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
        .with(
            Slot::from(FEEDBACK_TAP_SLOT),
            ReadTap::new(mark_for_application),
        );
    let registry = match link {
        Some(link) => registry
            .with(
                Slot::CongestionControl,
                CongestionControlBuilder::new(SharedEstimator(link.clone())).build(),
            )
            .with(Slot::from(FEEDBACK_SCOPE_SLOT), {
                let link = link.clone();
                ReadTap::new(move |msg: &mut rtc::interceptor::TaggedPacket| {
                    note_feedback_starts(&link, msg)
                })
            })
            .with(Slot::TwccSender, TwccSenderBuilder::new().build())
            .with(Slot::Pacer, PacedSender::new(link.clone())),
        None => registry,
    };
    // Registers transport-cc (feedback and header extension) and the TWCC receiver, which
    // sends publishers the feedback their own estimators need.
    configure_twcc_receiver_only(registry, media_engine)
}

/// Creates a connection ready to take the client's offer, and the downlink state its
/// congestion control shares with the worker (None with `bwe.enabled` off).
pub fn build(
    settings: &PeerSettings,
    stats: &Arc<WorkerStats>,
    now: Instant,
) -> Result<(RTCPeerConnection, Option<SharedLink>), rtc::shared::error::Error> {
    let link = settings.bwe.enabled.then(|| {
        LinkState::new(SendSideBwe::new(
            settings.bwe.initial_bps as f64,
            settings.bwe.min_bps as f64,
            settings.bwe.max_bps as f64,
        ))
    });
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs()?;
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: MID_URI.to_owned(),
            },
            kind,
            None,
        )?;
    }
    media_engine.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    let registry = interceptors(&mut media_engine, stats, link.as_ref())?;

    let setting_engine = SettingEngineBuilder::new()
        .with_lite(true)
        // No pinned credentials (`with_ice_credentials`): the engine would reuse pinned ones
        // on an ICE restart, where both agents must change theirs (RFC 8445 section 9, RFC 8839
        // section 4.4). The engine draws them from its crypto provider.
        .with_answering_dtls_role(RTCDtlsRole::Server)
        // mDNS queries would go out through the shared socket; Prism never needs them.
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_ice_timeouts(
            Some(settings.ice_disconnected_timeout),
            Some(settings.ice_failed_timeout),
            None,
        )
        .build();

    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting_engine)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)?;

    for addr in &settings.advertised {
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: addr.ip().to_string(),
                port: addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()?;
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
    }
    Ok((pc, link))
}
