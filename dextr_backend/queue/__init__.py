"""Redis + rq: the queues, the jobs the workers run, and the client the API waits with."""

PREDICT_QUEUE = "dextr-predict"
TRAIN_QUEUE = "dextr-train"
