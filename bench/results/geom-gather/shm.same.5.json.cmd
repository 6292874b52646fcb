KVW_MAX_GATHER=64 kvwire-bench kv --loopback --driver shm --model llama3-8b --tokens 2048 -n 4  --json
