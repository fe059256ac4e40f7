"""Wire formats and interface definitions shared by every Header Service process.

One place defines them; every process and tool imports from here:

- :mod:`protocols.sal` -- SAL topic types on the DDS bus (built from ``sal_topics.yaml``).
- :mod:`protocols.envelope` -- the versioned ZeroMQ multipart envelope.
- :mod:`protocols.messages` -- payloads carried inside envelopes (samples, headers, cache requests).
- :mod:`protocols.config` -- the per-instrument configuration models.
- :mod:`protocols.bus` -- one SAL bus interface over DDS or Kafka (``bus: dds|kafka``).
- :mod:`protocols.kafka_wire`, :mod:`protocols.kafka_bus`, :mod:`protocols.kafka_config`,
  :mod:`protocols.avro_schema` -- SAL over Kafka as ts_salobj 8 speaks it.
"""
