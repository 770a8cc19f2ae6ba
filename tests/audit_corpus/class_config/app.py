"""A config class handed to config_from_object, as Celery's docs show for objects.

Origin: the "config_from_object(Config)" example in Celery's Application guide
(userguide/application, "Configuration" > "Example 3: Using an object"), with a TLS broker
that checks the CA but names no server host name and no client certificate.
"""

import ssl

from celery import Celery


class Config:
    broker_url = "amqps://worker@rabbit.example:5671//"
    broker_use_ssl = {"ca_certs": "/etc/celery/ca.pem", "cert_reqs": ssl.CERT_REQUIRED}
    broker_connection_retry_on_startup = True
    task_serializer = "json"
    accept_content = ["json"]
    worker_enable_remote_control = False


app = Celery("proj")
app.config_from_object(Config)
