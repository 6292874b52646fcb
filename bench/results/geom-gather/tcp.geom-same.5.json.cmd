KVW_MAX_GATHER=64 kvwire-bench kv --loopback --driver tcp --model llama3-8b --tokens 2048 -n 4 --src-layout nhd --dst-layout nhd --json
