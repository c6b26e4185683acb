//! Where things live in a fleet's sensor pods: the data and config directories, file names and
//! the listener's metrics port, shared by the listener and its `punch` and `crawl` sidecars.

/// Where the sensor keeps its database and peer id inside the pod.
pub const DATA_DIR: &str = "/var/lib/p2p-sensor";
/// Directory the ConfigMap is mounted at.
pub const CONFIG_DIR: &str = "/etc/p2p-sensor";
/// File name of the rendered configuration in the ConfigMap.
pub const CONFIG_FILE: &str = "sensor.toml";
/// Port of the sensor's `/metrics`, `/healthz`, `/readyz`.
pub const METRICS_PORT: i32 = 9102;
/// The listener's SQLite file under [`DATA_DIR`] (the sensor's default `<data_dir>/sensor.sqlite`;
/// `storage.path` is not rendered). The crawl sidecar seeds from it.
pub const LISTENER_DATABASE_FILE: &str = "sensor.sqlite";

/// The environment of a sidecar (`punch`, `crawl`): the listener's downward API and `SENSOR_*`
/// overrides (`SENSOR_REPORT_SENDER` = pod name; a sidecar reports as `<sender>-<its name>`),
/// plus its own metrics port and database file under [`DATA_DIR`].
pub fn sidecar_env(metrics_port: i32, database_file: &str) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    let mut env = crate::pod::downward_env();
    env.push(crate::pod::env_value("SENSOR_METRICS_LISTEN", format!("0.0.0.0:{metrics_port}")));
    env.push(crate::pod::env_value("SENSOR_STORAGE_PATH", format!("{DATA_DIR}/{database_file}")));
    env
}
