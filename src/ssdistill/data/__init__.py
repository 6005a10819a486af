"""Images, views and datasets: ``data.images`` (decoding), ``data.views`` (view recipes), ``data.datasets`` (image
sources and training datasets), ``data.replay`` / ``data.pairs`` / ``data.mixing``. Import from the modules."""
