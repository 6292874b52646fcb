KVW_MAX_GATHER=64 kvwire-bench kv --loopback --driver ofi --listen ofi://127.0.0.1:0?provider=shm --model llama3-8b --tokens 512 -n 2  --json
