//! `opsloop proxy`: the deployment proxy on its own, with routes from the command line.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use opsloop_deploy::{Backend, Proxy, Route, Signals};

use crate::cli::ProxyArgs;
use crate::output;

/// `[HOST]/PREFIX=ADDRESS[,ADDRESS…]`.
fn parse_route(text: &str) -> anyhow::Result<Route> {
    let (target, addresses) =
        text.split_once('=').ok_or_else(|| anyhow!("route `{text}` has no `=`: write [HOST]/PREFIX=ADDRESS"))?;
    let slash = target.find('/').ok_or_else(|| anyhow!("route `{text}`: the path prefix starts with `/`"))?;
    let (host, prefix) = target.split_at(slash);
    let backends = addresses
        .split(',')
        .map(|address| {
            let address =
                address.trim().parse().with_context(|| format!("route `{text}`: `{address}` is no IP:PORT"))?;
            Ok(Backend { address, version: "static".to_owned(), weight: 1 })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Route {
        host: (!host.is_empty()).then(|| host.to_owned()),
        path_prefix: prefix.to_owned(),
        service: target.to_owned(),
        backends,
    })
}

pub async fn run(args: ProxyArgs) -> ExitCode {
    let routes = match args.routes.iter().map(|r| parse_route(r)).collect::<anyhow::Result<Vec<_>>>() {
        Ok(routes) => routes,
        Err(error) => return super::fail(&error),
    };
    let proxy = Proxy::new(Signals::default(), Duration::from_secs(args.timeout));
    proxy.switch(routes);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from)).max(1);
    let listen = args.listen;
    // The workers bind at once; the address is known before they serve.
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let serving = tokio::task::spawn_blocking(move || {
        proxy.serve_workers(listen, workers, stopped, move |address| {
            let _ = bound_tx.send(address);
        })
    });
    if let Ok(address) = bound_rx.recv() {
        println!("opsloop proxy listening on {address}");
        output::status(&format!("{workers} worker(s); Ctrl-C stops it after the requests in flight"));
    }
    match serving.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => super::fail(&anyhow!("cannot listen on {listen}: {error}")),
        Err(error) => super::fail(&anyhow!("the proxy failed: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_read_from_the_command_line() {
        let route = parse_route("api.example.com/v1=127.0.0.1:9001,127.0.0.1:9002").unwrap();
        assert_eq!(route.host.as_deref(), Some("api.example.com"));
        assert_eq!(route.path_prefix, "/v1");
        assert_eq!(route.backends.len(), 2);
        assert!(parse_route("/=127.0.0.1:80").unwrap().host.is_none());
        assert!(parse_route("nowhere").is_err());
        assert!(parse_route("/=localhost").is_err());
    }
}
