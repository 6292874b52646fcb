# SPDX-License-Identifier: MIT
"""Connectors in the shapes inference runtimes plug transfer engines into.

- kvwire.connectors.vllm: KVWireConnector, a vLLM V1 KV connector (KVConnectorBase_V1),
  push-based and layer-wise.
- kvwire.connectors.sglang: KVManager, KVSender, KVReceiver, KVPoll, KVBootstrapServer in
  the shapes of SGLang's disaggregation backends.

Neither imports vLLM or SGLang (they are not installable here); vllm.py subclasses vLLM's
base class when `import vllm` works.
"""
