// The Flex Consumption plan and the Linux function app that runs Hookflow, with its app settings.
@description('Concurrent HTTP requests per instance (Flex Consumption). Above 1 so that a callback made from inside a subscribe handler is served by the same instance.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

param name string
param planName string
param location string = resourceGroup().location
param tags object = {}

@description('Resource id of the user-assigned managed identity the app runs as.')
param identityId string

@description('Client id of that identity: tells the host and the SDKs which identity to use.')
param identityClientId string

param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string

@description('HOOKFLOW_* settings decided by the caller (main.bicep).')
param appSettings object = {}

@secure()
@description('HOOKFLOW_SIGNING_KEYS, kept in a secure parameter so it never shows in deployment history.')
param signingKeys string

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@maxValue(1000)
param maximumInstanceCount int = 100

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    // Linux.
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd deploys the `api` service of azure.yaml to the resource carrying this tag.
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    // On Flex Consumption the runtime and its version live here: the FUNCTIONS_WORKER_RUNTIME and
    // FUNCTIONS_EXTENSION_VERSION app settings of other plans are not used on it.
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        triggers: {
          http: {
            // A webhook target may call back from inside its subscribe handler, while the
            // request that called subscribe is still open. With one request per instance
            // (Flex's Python default) that callback waits for another instance to start.
            // Hookflow's requests mostly wait on I/O, so one instance serves several.
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// The complete app settings (this resource replaces whatever was there before).
resource functionAppSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: union(appSettings, {
    // Identity-based host storage: the host and Hookflow's table client
    // (shared/settings.py) authenticate with the managed identity; no connection string.
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
    AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
    AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
    // Local auth is off on Application Insights: the connection string only locates the
    // resource, the authentication string makes the SDK sign in with the identity.
    APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
    // Callback URLs must point at the app's public name, not whatever Host header reached it.
    HOOKFLOW_PUBLIC_BASE_URL: 'https://${functionApp.properties.defaultHostName}'
    HOOKFLOW_SIGNING_KEYS: signingKeys
  })
}

output name string = functionApp.name
output uri string = 'https://${functionApp.properties.defaultHostName}'
