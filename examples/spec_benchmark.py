# The single-process benchmark of the spec (performance_benchmarks.md, section 3), unchanged.
import time
import pandas as pd
from context_framework.context_store import InMemoryContextStore
from context_framework.adapters.pandas_adapter import PandasContextAdapter
# from my_redis_store import RedisContextStore  # hypothetical

def benchmark_store(adapter, num_ops=10000):
    """
    Measures the time to perform num_ops add_context and get_context calls.
    """
    start = time.time()
    # Add context
    for i in range(num_ops):
        adapter.add_context(("row", i), {"meta": f"value_{i}"})
    mid = time.time()
    # Get context
    for i in range(num_ops):
        adapter.get_context(("row", i))
    end = time.time()

    add_time = mid - start
    get_time = end - mid
    print(f"Add time: {add_time:.4f}s, Get time: {get_time:.4f}s")

if __name__ == "__main__":
    df = pd.DataFrame({"A": range(100000)})  # example data

    # 1. InMemory store
    mem_store = InMemoryContextStore()
    mem_adapter = PandasContextAdapter(df, context_store=mem_store)
    print("Benchmarking InMemoryContextStore...")
    benchmark_store(mem_adapter, num_ops=10000)

    # 2. Redis store (commented out if not available)
    # redis_store = RedisContextStore(host="localhost", port=6379)
    # redis_adapter = PandasContextAdapter(df, context_store=redis_store)
    # print("Benchmarking RedisContextStore...")
    # benchmark_store(redis_adapter, num_ops=10000)
