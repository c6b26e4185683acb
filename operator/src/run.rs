//! `operator run`: the collector, the HTTP endpoints, leader election, the shared caches and both
//! controllers, wired together and shut down gracefully on SIGTERM/SIGINT.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use kube::api::Api;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use kube_lease_manager::LeaseManagerBuilder;
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::collector::metrics::CollectorMetrics;
use crate::collector::store::{ReportStore, StoreLimits};
use crate::context::{Caches, Context, Resync, Settings};
use crate::crd::{RelayNode, SensorFleet};
use crate::error::StartupError;
use crate::http::{self, HttpState};
use crate::labels::MANAGED_SELECTOR;
use crate::metrics::Metrics;
use crate::trim::Trim;
use crate::{fleet, relay};

/// Everything `operator run` is told on its command line.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub collector_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub settings: Settings,
    pub leader_election: bool,
    pub lease_name: String,
    /// Namespace of the Lease: the operator's own (`POD_NAMESPACE`).
    pub lease_namespace: String,
    /// This replica's identity in the Lease (`POD_NAME`).
    pub identity: String,
    /// Watch only this namespace; `None` = all namespaces.
    pub watch_namespace: Option<String>,
    /// A sender silent this long is dropped from the collector.
    pub forget_after: Duration,
    /// Reconciliations running at once per controller.
    pub concurrency: u16,
}

/// A one-shot, cloneable shutdown signal.
#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Self { tx: Arc::new(tx), rx }
    }

    /// Starts the shutdown (idempotent).
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Resolves once [`Shutdown::trigger`] was called.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.rx.clone();
        async move {
            let _ = rx.wait_for(|down| *down).await;
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

/// The operator's `User-Agent` on every API request: `p2p-sensor-operator/<version>`, so that an
/// API server's audit log and `apiserver_request_total` consumers can tell its requests apart
/// (kube-rs sends none by default).
pub const USER_AGENT: &str = concat!("p2p-sensor-operator/", env!("CARGO_PKG_VERSION"));

/// A client from the in-cluster or kubeconfig configuration ([`kube::Config::infer`]) that sends
/// [`USER_AGENT`]. Errors: [`StartupError::KubeConfig`] when no configuration is found,
/// [`StartupError::KubeClient`] when it is unusable.
async fn client() -> Result<Client, StartupError> {
    let mut config = kube::Config::infer().await.map_err(|source| StartupError::KubeConfig { source })?;
    config.headers.push((::http::header::USER_AGENT, ::http::HeaderValue::from_static(USER_AGENT)));
    Client::try_from(config).map_err(|source| StartupError::KubeClient { source })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A label-selected, [trimmed](Trim) shared cache of `K`: the store, `subscribers` handles for controllers, and
/// the future that drives the watch (run it on a task).
fn shared_cache<K>(
    api: Api<K>,
    subscribers: usize,
) -> (Store<K>, Vec<ReflectHandle<K>>, impl Future<Output = ()> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Trim + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store_shared(1024);
    let handles = (0..subscribers).filter_map(|_| writer.subscribe()).collect();
    let config = watcher::Config::default().labels(MANAGED_SELECTOR);
    let trimmed = watcher(api, config).default_backoff().modify(K::trim);
    let driver = reflector::reflector(writer, trimmed).touched_objects().for_each(|event| {
        if let Err(e) = event {
            tracing::warn!(kind = K::kind(&()).as_ref(), error = %e, "watch failed; retrying with backoff");
        }
        std::future::ready(())
    });
    (store, handles, driver)
}

/// A controller for the primary resource `K` whose cache keeps [trimmed](Trim) objects
/// (`Controller::new` would cache them whole, managedFields and all).
fn trimmed_controller<K>(api: Api<K>) -> Controller<K>
where
    K: Resource<DynamicType = ()> + Trim + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let trimmed = watcher(api, watcher::Config::default()).default_backoff().modify(K::trim);
    Controller::for_stream(reflector::reflector(writer, trimmed).applied_objects(), store)
}

/// Runs until `shutdown` fires (or leadership is lost: [`StartupError::LeaseLost`]).
/// Errors: [`StartupError::Bind`] for a port in use, [`StartupError::KubeConfig`] /
/// [`StartupError::KubeClient`] without a usable kubeconfig or in-cluster config,
/// [`StartupError::LeaderElection`] / [`StartupError::LeaseTaskEnded`] when the Lease cannot be
/// held. A failing collector server is logged, not returned.
pub async fn run(options: RunOptions, shutdown: Shutdown) -> Result<(), StartupError> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let collector_metrics = CollectorMetrics::register(&mut registry);
    let registry = Arc::new(registry);
    let reports = Arc::new(ReportStore::new(StoreLimits::default()));
    let ready = Arc::new(AtomicBool::new(false));

    // Listeners first: a port in use fails start-up before anything else happens.
    let http_listener = http::bind(options.http_listen).await?;
    let collector_listener = http::bind(options.collector_listen).await?;
    tracing::info!(http = %options.http_listen, collector = %options.collector_listen, "listening");
    let http_task = tokio::spawn(http::serve(
        http_listener,
        HttpState { registry: registry.clone(), ready: ready.clone() },
        shutdown.wait(),
    ));
    let collector_task = tokio::spawn(crate::collector::service::serve(
        collector_listener,
        reports.clone(),
        collector_metrics.clone(),
        shutdown.wait(),
    ));
    let publisher = tokio::spawn(publish_loop(reports.clone(), collector_metrics, options.clone(), shutdown.clone()));

    let client = client().await?;

    // Leader election: only the Lease holder reconciles (and is Ready).
    let mut lease = None;
    if options.leader_election {
        let manager = LeaseManagerBuilder::new(client.clone(), &options.lease_name)
            .with_namespace(&options.lease_namespace)
            .with_identity(&options.identity)
            .with_duration(15)
            .with_grace(5)
            .build()
            .await
            .map_err(|source| StartupError::LeaderElection { source })?;
        let (mut leading, task) = manager.watch().await;
        tracing::info!(lease = %options.lease_name, identity = %options.identity, "waiting for leadership");
        let mut stop = shutdown.wait().boxed();
        loop {
            if *leading.borrow_and_update() {
                break;
            }
            tokio::select! {
                changed = leading.changed() => changed.map_err(|_| StartupError::LeaseTaskEnded)?,
                _ = &mut stop => return Ok(()),
            }
        }
        tracing::info!("leading");
        lease = Some((leading, task));
    }

    let ns = &options.watch_namespace;
    let (stateful_sets, mut sts_subs, sts_driver) = shared_cache::<StatefulSet>(api(&client, ns), 1);
    let (daemon_sets, mut ds_subs, ds_driver) = shared_cache::<DaemonSet>(api(&client, ns), 1);
    let (deployments, mut dep_subs, dep_driver) = shared_cache::<Deployment>(api(&client, ns), 1);
    let (services, mut svc_subs, svc_driver) = shared_cache::<Service>(api(&client, ns), 2);
    let (config_maps, mut cm_subs, cm_driver) = shared_cache::<ConfigMap>(api(&client, ns), 2);
    let (service_accounts, mut sa_subs, sa_driver) = shared_cache::<ServiceAccount>(api(&client, ns), 2);
    let (secrets, mut secret_subs, secret_driver) = shared_cache::<Secret>(api(&client, ns), 1);
    let drivers = [
        tokio::spawn(sts_driver),
        tokio::spawn(ds_driver),
        tokio::spawn(dep_driver),
        tokio::spawn(svc_driver),
        tokio::spawn(cm_driver),
        tokio::spawn(sa_driver),
        tokio::spawn(secret_driver),
    ];

    let controller_config = ControllerConfig::default().concurrency(options.concurrency);
    let fleet_controller = trimmed_controller(api::<SensorFleet>(&client, ns))
        .with_config(controller_config.clone())
        .owns_shared_stream(sts_subs.remove(0))
        .owns_shared_stream(ds_subs.remove(0))
        .owns_shared_stream(svc_subs.remove(0))
        .owns_shared_stream(cm_subs.remove(0))
        .owns_shared_stream(sa_subs.remove(0))
        .graceful_shutdown_on(shutdown.wait());
    let relay_controller = trimmed_controller(api::<RelayNode>(&client, ns))
        .with_config(controller_config)
        .owns_shared_stream(dep_subs.remove(0))
        .owns_shared_stream(svc_subs.remove(0))
        .owns_shared_stream(cm_subs.remove(0))
        .owns_shared_stream(sa_subs.remove(0))
        .owns_shared_stream(secret_subs.remove(0))
        .graceful_shutdown_on(shutdown.wait());

    let caches = Caches {
        fleets: fleet_controller.store(),
        relays: relay_controller.store(),
        stateful_sets,
        daemon_sets,
        deployments,
        services,
        config_maps,
        service_accounts,
        secrets,
    };
    let reporter = Reporter { controller: "p2p-sensor-operator".into(), instance: Some(options.identity.clone()) };
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings: options.settings.clone(),
        caches: caches.clone(),
        reports,
        metrics,
        recorder: Recorder::new(client.clone(), reporter),
        backoff: Backoff::new(Duration::from_secs(5), Duration::from_secs(300)),
        resync: Resync::default(),
        clock: Arc::new(jiff::Timestamp::now),
    });

    // Ready once every cache has its first list. Polled rather than awaited: a store's readiness is
    // a oneshot that wakes only its latest waiter, and the controllers wait on their own stores
    // too (kube-runtime's DelayedInit), so an awaiting task here could sleep forever.
    let readiness = {
        let (caches, ready) = (caches.clone(), ready.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut reported = 0u64;
            loop {
                let pending = pending_caches(&caches);
                if pending.is_empty() {
                    break;
                }
                let waited = started.elapsed().as_secs() / 30;
                if waited > reported {
                    reported = waited;
                    tracing::warn!(?pending, waited_secs = started.elapsed().as_secs(), "caches not synced yet");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            http::set_ready(&ready, true);
            tracing::info!("caches synced; ready");
        })
    };

    let fleets = fleet_controller
        .run(fleet::reconcile::reconcile, fleet::reconcile::error_policy, ctx.clone())
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "sensorfleet controller");
            }
            std::future::ready(())
        });
    let relays = relay_controller
        .run(relay::reconcile::reconcile, relay::reconcile::error_policy, ctx.clone())
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "relaynode controller");
            }
            std::future::ready(())
        });

    let lost_lease = async {
        match lease.as_mut() {
            Some((leading, _)) => {
                while leading.changed().await.is_ok() {
                    if !*leading.borrow_and_update() {
                        return;
                    }
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    let outcome = tokio::select! {
        _ = futures::future::join(fleets, relays) => Ok(()),
        _ = lost_lease => {
            tracing::error!("lost the lease; stopping so that another replica can lead");
            Err(StartupError::LeaseLost)
        }
    };
    http::set_ready(&ready, false);
    shutdown.trigger();
    readiness.abort();
    for driver in drivers {
        driver.abort();
    }
    let _ = publisher.await;
    let _ = http_task.await;
    match collector_task.await {
        Ok(Err(source)) => {
            let e = StartupError::Collector { source };
            tracing::warn!(error = %e, reason = e.reason(), "collector server ended with an error")
        }
        Err(e) => tracing::warn!(error = %e, "collector task failed"),
        Ok(Ok(())) => {}
    }
    if let Some((leading, task)) = lease {
        drop(leading); // closes the channel: the manager releases the Lease for the next leader
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    tracing::info!("stopped");
    outcome
}

/// Kinds whose cache has not completed its first list (empty when all have).
fn pending_caches(caches: &Caches) -> Vec<&'static str> {
    use crate::context::synced as ready;
    [
        ("SensorFleet", ready(&caches.fleets)),
        ("RelayNode", ready(&caches.relays)),
        ("StatefulSet", ready(&caches.stateful_sets)),
        ("DaemonSet", ready(&caches.daemon_sets)),
        ("Deployment", ready(&caches.deployments)),
        ("Service", ready(&caches.services)),
        ("ConfigMap", ready(&caches.config_maps)),
        ("ServiceAccount", ready(&caches.service_accounts)),
        ("Secret", ready(&caches.secrets)),
    ]
    .into_iter()
    .filter(|(_, ready)| !ready)
    .map(|(kind, _)| kind)
    .collect()
}

/// Publishes the collector's aggregates every status interval (the rate limit of report-driven
/// status changes) and drops fleets that no longer exist from the fleet gauges.
async fn publish_loop(
    reports: Arc<ReportStore>,
    metrics: Arc<CollectorMetrics>,
    options: RunOptions,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(options.settings.status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = shutdown.wait().boxed();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let stats = reports.publish(jiff::Timestamp::now(), options.settings.report_timeout, options.forget_after);
                metrics.record_publish(&stats);
            }
            _ = &mut stop => return,
        }
    }
}
