"""A runtime monitor: probes and SAE latents scored at every generated token from the same forward pass,
aggregated over a window of tokens, with events above calibrated thresholds as JSON lines.
See docs/monitor.md."""

from rama.monitor.calibration import calibrate, control_scores, token_threshold
from rama.monitor.events import CallbackSink, JsonLinesFile, MonitorEvent, StreamSink, read_events
from rama.monitor.monitor import (
    AGGREGATES,
    Monitor,
    MonitorBusyError,
    MonitorConfig,
    MonitorResult,
    MonitorRun,
    TokenScores,
    score_offline,
    window_scores,
)
from rama.monitor.watchers import LatentWatcher, ProbeWatcher, Watcher, probe_watcher

__all__ = [
    "AGGREGATES",
    "CallbackSink",
    "JsonLinesFile",
    "LatentWatcher",
    "Monitor",
    "MonitorBusyError",
    "MonitorConfig",
    "MonitorEvent",
    "MonitorResult",
    "MonitorRun",
    "ProbeWatcher",
    "StreamSink",
    "TokenScores",
    "Watcher",
    "calibrate",
    "control_scores",
    "probe_watcher",
    "read_events",
    "score_offline",
    "token_threshold",
    "window_scores",
]
