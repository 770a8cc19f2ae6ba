"""The seed's own advice, written as its readers write it: an app module, settings on app.conf.

Origin: the project's earlier brief (notional), which told readers to set worker_port,
worker_hijack_root_logger and task_create_missing_queues; the Celery() line is the shape of
Celery's docs ("First steps with Celery"), with the broker credentials readers paste in.
"""

from celery import Celery

app = Celery("proj", broker="amqp://guest:guest@localhost:5672//")
app.conf.worker_port = 12345
app.conf.worker_hijack_root_logger = False
app.conf.task_create_missing_queues = True


@app.task
def add(x, y):
    return x + y
