"""OpenTelemetry for fastapi-zitadel: install providers before creating the instance."""

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter


def configure_telemetry(reader: MetricReader, exporter: SpanExporter) -> None:
    """E.g. ``PeriodicExportingMetricReader(OTLPMetricExporter())`` and ``OTLPSpanExporter()``
    from the ``opentelemetry-exporter-otlp`` package."""
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
