//! The acceptor: listens on the control socket and starts one [`Session`] per connection.

use actix::{Actor, Context, StreamHandler};
use tokio::net::{UnixListener, UnixStream};
use tracing::warn;

use super::{Services, session::Session};

/// The control-socket acceptor.
pub struct Acceptor {
    services: Services,
}

impl Acceptor {
    /// Starts accepting on `listener`.
    pub fn start(listener: UnixListener, services: Services) -> actix::Addr<Self> {
        Acceptor::create(move |ctx| {
            let incoming = futures::stream::unfold(listener, |l| async move {
                Some((l.accept().await.map(|(s, _)| s), l))
            });
            actix::AsyncContext::add_stream(ctx, incoming);
            Acceptor { services }
        })
    }
}

impl Actor for Acceptor {
    type Context = Context<Self>;
}

impl StreamHandler<std::io::Result<UnixStream>> for Acceptor {
    fn handle(&mut self, item: std::io::Result<UnixStream>, _: &mut Context<Self>) {
        match item {
            Ok(stream) => Session::start(stream, self.services.clone()),
            Err(e) => warn!(error = %e, "accept failed"),
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}
