"""Customer webhooks: endpoints, their URLs' safety, signing, and the worker's sender."""
