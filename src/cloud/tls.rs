//! TLS for the HTTPS client: rustls with enrolld's own client configuration,
//! so that certificates are checked at the trusted time floor
//! ([`super::timefloor`]) instead of a system clock that may read 1970.
//!
//! ureq 3 builds its rustls configuration itself and offers no hook for the
//! verification time, so this is a connector in ureq's chain
//! (`ureq::unversioned::transport`, pinned with `=` in Cargo.toml) in place
//! of its `RustlsConnector`: CONNECT proxy, then TCP, then this.

use crate::cloud::timefloor::TimeFloor;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::sync::Arc;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

/// The client configuration: the given roots, checked at the floor's time.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    floor: &Arc<TimeFloor>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut store = RootCertStore::empty();
    let (_, ignored) = store.add_parsable_certificates(roots.iter().cloned());
    if ignored > 0 {
        log::debug!("{ignored} root certificate(s) could not be parsed");
    }
    let config = ClientConfig::builder_with_details(provider, floor.time_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Wraps the chained transport in TLS for `https://` URLs.
#[derive(Debug)]
pub struct FloorTlsConnector {
    pub config: Arc<ClientConfig>,
}

impl<In: Transport> Connector<In> for FloorTlsConnector {
    type Out = Either<In, FloorTlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Err(ureq::Error::Tls("TLS without an underlying connection"));
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .host()
            .ok_or(ureq::Error::Tls("no host name for TLS"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host)
            .map_err(|_| ureq::Error::Tls("invalid host name for TLS"))?
            .to_owned();
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        Ok(Some(Either::B(FloorTlsTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: StreamOwned { conn, sock },
            sealed: Vec::new(),
        })))
    }
}

pub struct FloorTlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
    /// TLS records waiting to be written, reused between requests: at most
    /// rustls's buffer limit (64 KiB) of plaintext, sealed.
    sealed: Vec<u8>,
}

impl std::fmt::Debug for FloorTlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloorTlsTransport").finish_non_exhaustive()
    }
}

impl Transport for FloorTlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let StreamOwned { conn, sock } = &mut self.stream;
        sock.set_timeout(timeout);
        let mut output = &self.buffers.output()[..amount];
        // rustls's own `Stream` writes one TLS record (16 KiB) per send(2)
        // (the adapter has no vectored write): an image's body took eight
        // sends. Sealed here into one buffer, it takes one per 64 KiB.
        while !output.is_empty() {
            let n = conn.writer().write(output)?;
            output = &output[n..];
            self.sealed.clear();
            while conn.wants_write() {
                conn.write_tls(&mut self.sealed)?;
            }
            if n == 0 && self.sealed.is_empty() {
                return Err(ureq::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    "TLS accepted no data",
                )));
            }
            sock.write_all(&self.sealed)?;
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}
